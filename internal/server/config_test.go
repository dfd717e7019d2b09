package server

import (
	"slices"
	"testing"
)

// TestEffectivePushAllow: with no --push-allow a server on a loopback
// address allows loopback targets, and a server reachable from elsewhere
// allows nothing; a given list is used as it is, everywhere.
func TestEffectivePushAllow(t *testing.T) {
	for _, tc := range []struct {
		addr     string
		given    []string
		want     []string
		loopback bool
	}{
		{"127.0.0.1:7780", nil, LoopbackPushAllow, true},
		{"127.0.0.2:0", nil, LoopbackPushAllow, true},
		{"[::1]:7780", nil, LoopbackPushAllow, true},
		{"localhost:7780", nil, LoopbackPushAllow, true},
		{":7780", nil, nil, false},
		{"0.0.0.0:7780", nil, nil, false},
		{"[::]:7780", nil, nil, false},
		{"10.1.2.3:7780", nil, nil, false},
		{"[::ffff:10.1.2.3]:7780", nil, nil, false},
		{"accord.example.com:7780", nil, nil, false},
		{"127.0.0.1:7780", []string{"https://*.svc.example.com"}, []string{"https://*.svc.example.com"}, false},
		{"0.0.0.0:7780", []string{"10.0.0.0/8"}, []string{"10.0.0.0/8"}, false},
	} {
		cfg := DefaultConfig()
		cfg.Addr, cfg.PushAllow = tc.addr, tc.given
		got, loopback := cfg.EffectivePushAllow()
		if !slices.Equal(got, tc.want) || loopback != tc.loopback {
			t.Errorf("addr %s, --push-allow %v: %v (loopback default %v), want %v (%v)", tc.addr, tc.given, got, loopback, tc.want, tc.loopback)
		}
	}
	if DefaultConfig().PushAllow != nil {
		t.Error("DefaultConfig sets PushAllow: the default must follow the address")
	}
}
