// Package buildinfo says which build of Accord is running: its version,
// the commit it was built from, when, and with which Go. `accord version`,
// GET /v1/system, the accord_build_info metric and the startup log all read
// it from here.
//
// The Go toolchain records the module version and, in a git checkout, the
// commit and its time; `make release` also sets version, commit and date at
// link time (-X), which win, so that a build from a source archive (no
// git) still says what it is.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Set at link time, e.g.
// -X github.com/accord-saga/accord/internal/buildinfo.version=v1.2.0.
var (
	version string
	commit  string
	date    string
)

// Info describes one build.
type Info struct {
	// Version is the release (v1.2.0), a pseudo-version for a module
	// build, or "dev" for a local build.
	Version string `json:"version" doc:"Release version, or dev for a local build."`
	// Commit is the git commit built, or "unknown".
	Commit string `json:"commit" doc:"Git commit the binary was built from, or unknown."`
	// Modified reports a build from a tree with uncommitted changes.
	Modified bool `json:"modified" doc:"Built from a tree with uncommitted changes."`
	// BuildDate is the commit's time (RFC 3339), which a reproducible build
	// uses as its date; empty when unknown.
	BuildDate string `json:"build_date" doc:"Build date (the commit time, RFC 3339), empty when unknown."`
	// GoVersion is the toolchain that built the binary.
	GoVersion string `json:"go_version" doc:"Go toolchain that built the binary."`
	// Platform is GOOS/GOARCH.
	Platform string `json:"platform" doc:"Operating system and architecture (GOOS/GOARCH)."`
}

// Read returns the running binary's build information.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return fromBuild(bi, version, commit, date)
}

// fromBuild merges what the toolchain recorded (bi may be nil) with the
// link-time values, which win when set.
func fromBuild(bi *debug.BuildInfo, version, commit, date string) Info {
	info := Info{Version: "dev", Commit: "unknown", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi != nil {
		info.GoVersion = bi.GoVersion
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			info.Version = v
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info.Commit = s.Value
			case "vcs.time":
				info.BuildDate = s.Value
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
	}
	if version != "" {
		info.Version = version
	}
	if commit != "" {
		info.Commit = commit
	}
	if date != "" {
		info.BuildDate = date
	}
	return info
}

// Collector returns the accord_build_info gauge: always 1, with the build's
// version, commit and Go version and the store's schema version as labels,
// so that dashboards can show what runs where and alerts can join on it.
func Collector(info Info, schemaVersion int) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "accord_build_info",
		Help: "Always 1; the labels say which build runs and the schema version of its store.",
		ConstLabels: prometheus.Labels{
			"version": info.Version, "commit": info.Commit, "go_version": info.GoVersion,
			"schema_version": strconv.Itoa(schemaVersion),
		},
	})
	g.Set(1)
	return g
}
