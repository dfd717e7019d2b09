package server

import (
	"strings"
	"testing"
)

func TestTracingConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		endpoint string
		insecure bool
		ratio    float64
		wantErr  string // "" for valid
	}{
		{name: "off", ratio: 1},
		{name: "http url", endpoint: "http://127.0.0.1:4318", ratio: 1},
		{name: "https url with path", endpoint: "https://otel.example.com/otlp/v1/traces", ratio: 0.25},
		{name: "host:port", endpoint: "collector:4318", ratio: 1},
		{name: "host:port insecure", endpoint: "collector:4318", insecure: true, ratio: 1},
		{name: "no port", endpoint: "collector", ratio: 1, wantErr: "--otlp-endpoint"},
		{name: "bad scheme", endpoint: "grpc://collector:4317", ratio: 1, wantErr: "--otlp-endpoint"},
		{name: "no host", endpoint: "http:///v1/traces", ratio: 1, wantErr: "--otlp-endpoint"},
		{name: "insecure https", endpoint: "https://collector:4318", insecure: true, ratio: 1, wantErr: "--otlp-insecure"},
		{name: "ratio zero", ratio: 0, wantErr: "--trace-sample-ratio"},
		{name: "ratio above one", endpoint: "http://127.0.0.1:4318", ratio: 1.5, wantErr: "--trace-sample-ratio"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			cfg.OTLPEndpoint, cfg.OTLPInsecure, cfg.TraceSampleRatio = tc.endpoint, tc.insecure, tc.ratio
			err := cfg.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Validate: %v, want an error naming %s", err, tc.wantErr)
			}
		})
	}
}

func TestDefaultConfigTracesNothing(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	if cfg.OTLPEndpoint != "" || cfg.TraceSampleRatio != 1 {
		t.Fatalf("default endpoint %q ratio %g, want off and 1", cfg.OTLPEndpoint, cfg.TraceSampleRatio)
	}
	tr, err := newTracer(t.Context(), cfg, nil)
	if tr != nil || err != nil {
		t.Fatalf("newTracer with no endpoint = %v, %v; want nil, nil", tr, err)
	}
}
