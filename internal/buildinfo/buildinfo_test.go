package buildinfo

import (
	"fmt"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestFromBuild(t *testing.T) {
	vcs := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
		{Key: "vcs.time", Value: "2026-12-01T10:00:00Z"},
		{Key: "vcs.modified", Value: "true"},
	}}
	for _, c := range []struct {
		name                  string
		bi                    *debug.BuildInfo
		version, commit, date string
		want                  Info
	}{
		{"no build info", nil, "", "", "", Info{Version: "dev", Commit: "unknown"}},
		{"local build in a checkout", vcs, "", "", "",
			Info{Version: "dev", Commit: "0123456789abcdef0123456789abcdef01234567", Modified: true, BuildDate: "2026-12-01T10:00:00Z", GoVersion: "go1.26.8"}},
		{"go install of a tag", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.4.0"}}, "", "", "",
			Info{Version: "v1.4.0", Commit: "unknown", GoVersion: "go1.26.8"}},
		{"release: link-time values win", vcs, "v1.5.0", "fedcba", "2026-12-02T00:00:00Z",
			Info{Version: "v1.5.0", Commit: "fedcba", Modified: true, BuildDate: "2026-12-02T00:00:00Z", GoVersion: "go1.26.8"}},
	} {
		got := fromBuild(c.bi, c.version, c.commit, c.date)
		if c.want.GoVersion == "" {
			c.want.GoVersion = got.GoVersion // the test binary's
		}
		c.want.Platform = got.Platform
		if got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
		if !strings.Contains(got.Platform, "/") {
			t.Errorf("%s: platform %q", c.name, got.Platform)
		}
	}
}

func TestCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(Collector(Info{Version: "v1.5.0", Commit: "fedcba", GoVersion: "go1.26.8"}, 7))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "accord_build_info" || len(mfs[0].Metric) != 1 {
		t.Fatalf("gathered %v", mfs)
	}
	m := mfs[0].Metric[0]
	labels := map[string]string{}
	for _, l := range m.Label {
		labels[l.GetName()] = l.GetValue()
	}
	want := map[string]string{"version": "v1.5.0", "commit": "fedcba", "go_version": "go1.26.8", "schema_version": "7"}
	if fmt.Sprint(labels) != fmt.Sprint(want) || m.GetGauge().GetValue() != 1 {
		t.Errorf("accord_build_info %v = %v, want %v = 1", labels, m.GetGauge().GetValue(), want)
	}
}
