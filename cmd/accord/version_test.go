package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/accord-saga/accord/internal/storage/postgres"
	"github.com/accord-saga/accord/internal/storage/sqlite"
)

type versionJSON struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	BuildDate string `json:"build_date"`
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
	Schema    struct {
		SQLite   int `json:"sqlite"`
		Postgres int `json:"postgres"`
	} `json:"schema_version"`
}

func readVersion(t *testing.T, bin string) versionJSON {
	t.Helper()
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatalf("%s version --json: %v", bin, err)
	}
	var v versionJSON
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return v
}

// TestVersionCommand: accord version names the build and the schema
// versions of both stores; a release build (the link-time values `make
// release` sets) names its version, commit and date.
func TestVersionCommand(t *testing.T) {
	v := readVersion(t, accordBin)
	if v.Version == "" || v.Commit == "" || v.GoVersion != runtime.Version() || v.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("version %+v", v)
	}
	if v.Schema.SQLite != sqlite.SchemaVersion() || v.Schema.Postgres != postgres.SchemaVersion {
		t.Errorf("schema versions %+v, want sqlite %d postgres %d", v.Schema, sqlite.SchemaVersion(), postgres.SchemaVersion)
	}
	code, stdout, _ := runAccord(t, nil, "version")
	if code != 0 || !strings.HasPrefix(stdout, "accord "+v.Version+"\n") || !strings.Contains(stdout, "commit:         "+v.Commit) {
		t.Errorf("accord version: exit %d\n%s", code, stdout)
	}

	release := filepath.Join(t.TempDir(), "accord")
	const pkg = "github.com/accord-saga/accord/internal/buildinfo"
	build := exec.Command("go", "build", "-o", release, "-ldflags",
		"-X "+pkg+".version=v9.8.7 -X "+pkg+".commit=0123abcd -X "+pkg+".date=2026-12-01T10:00:00Z",
		"github.com/accord-saga/accord/cmd/accord")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	r := readVersion(t, release)
	if r.Version != "v9.8.7" || r.Commit != "0123abcd" || r.BuildDate != "2026-12-01T10:00:00Z" {
		t.Errorf("release build says %+v", r)
	}
	out, err := exec.Command(release, "--version").Output()
	if err != nil || !strings.Contains(string(out), "v9.8.7") {
		t.Errorf("accord --version: %v %s", err, out)
	}
}
