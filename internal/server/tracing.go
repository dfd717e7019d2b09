package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"

	"github.com/accord-saga/accord/internal/redact"
	"github.com/accord-saga/accord/internal/tracing"
)

// otlpTracesPath is the OTLP/HTTP path of traces, used when the endpoint
// names none (as OTEL_EXPORTER_OTLP_ENDPOINT does).
const otlpTracesPath = "/v1/traces"

// newTracer returns the tracer the configuration asks for, or nil when
// tracing is off. It opens no connection: the exporter connects when it
// first exports.
func newTracer(ctx context.Context, cfg Config, log *slog.Logger) (*tracing.Tracer, error) {
	if cfg.OTLPEndpoint == "" {
		return nil, nil
	}
	opts, err := otlpOptions(cfg.OTLPEndpoint, cfg.OTLPInsecure)
	if err != nil {
		return nil, err
	}
	// Export failures (collector down) surface here, once per failed
	// batch; the spans of that batch are dropped.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing", "err", err) }))
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("--otlp-endpoint: %w", err)
	}
	tr, err := tracing.New(ctx, tracing.Config{Exporter: exp, SampleRatio: cfg.TraceSampleRatio, ServiceVersion: cfg.Version})
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, err
	}
	return tr, nil
}

// otlpOptions turns --otlp-endpoint and --otlp-insecure into exporter
// options. Everything else (headers, timeout, compression, certificates)
// follows the standard OTEL_EXPORTER_OTLP_* variables, which the exporter
// reads itself.
func otlpOptions(endpoint string, insecure bool) ([]otlptracehttp.Option, error) {
	if !strings.Contains(endpoint, "://") {
		if _, _, err := net.SplitHostPort(endpoint); err != nil {
			return nil, fmt.Errorf("--otlp-endpoint %q: want http(s)://host:port[/path] or host:port", redact.URL(endpoint))
		}
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(endpoint), otlptracehttp.WithURLPath(otlpTracesPath)}
		if insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		return opts, nil
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--otlp-endpoint %q: want http(s)://host:port[/path] or host:port", redact.URL(endpoint))
	}
	if insecure && u.Scheme == "https" {
		return nil, fmt.Errorf("--otlp-insecure contradicts the https endpoint %q", redact.URL(endpoint))
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = otlpTracesPath
	}
	// The scheme says whether TLS is used.
	return []otlptracehttp.Option{otlptracehttp.WithEndpointURL(u.String())}, nil
}
