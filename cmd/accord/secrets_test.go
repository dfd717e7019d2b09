package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/storage/postgres/pgtest"
)

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := ln.Addr().String()
	must(t, ln.Close())
	return addr
}

// TestSecretsStayOutOfLogs runs a server whose database URL, OTLP endpoint
// and webhook URL carry secrets through startup, a failing webhook (a dead
// letter), a saga traced to a collector that is not there, a refused
// request and shutdown, at debug level, and checks
// that no log line and no API answer shows a secret. Refused
// configurations (a key=value connection string, an unreachable database)
// must not print theirs either.
func TestSecretsStayOutOfLogs(t *testing.T) {
	const (
		dbUserPW  = "dbUserPw-7c1f"
		dbQueryPW = "dbQueryPw-93ab"
		otlpKey   = "otlpKey-55e2"
		otlpHdr   = "otlpHeader-0d4a"
		hookToken = "hookToken-e81c"
		kvPW      = "kvPassword-4b2e"
	)
	secrets := []string{dbUserPW, dbQueryPW, otlpKey, otlpHdr, hookToken, kvPW}
	checkClean := func(t *testing.T, what, text string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s shows the secret %q:\n%s", what, s, text)
			}
		}
	}

	t.Run("refused configurations", func(t *testing.T) {
		for _, args := range [][]string{
			{"--database-url", "host=127.0.0.1 port=1 user=u password=" + kvPW + " dbname=x"},
			{"--database-url", "postgres://u:" + kvPW + "@127.0.0.1:1/x?sslmode=disable&connect_timeout=2"},
			{"--database-url", "postgres://u@127.0.0.1:1/x?sslmode=disable&connect_timeout=2&password=" + kvPW},
			{"--otlp-endpoint", "ftp://127.0.0.1:1/v1/traces?api_key=" + kvPW},
		} {
			code, stdout, stderr := runAccord(t, nil, append([]string{"server", "--addr", "127.0.0.1:0", "--data", t.TempDir()}, args...)...)
			if code == 0 {
				t.Fatalf("%v: exit 0", args)
			}
			checkClean(t, "the error of "+args[0], stdout+stderr)
		}
	})

	pgURL, schema := pgtest.Schema(t)
	u, err := url.Parse(pgURL)
	must(t, err)
	u.User = url.UserPassword(u.User.Username(), dbUserPW)
	q := u.Query()
	q.Set("password", dbQueryPW)
	u.RawQuery = q.Encode()
	dbFile := filepath.Join(t.TempDir(), "database-url")
	// Both forms in one run: the query's password overrides the user
	// info's for the driver, and neither may show.
	must(t, os.WriteFile(dbFile, []byte(u.String()+"\n"), 0o600))

	collector := closedPort(t)
	hook := closedPort(t)
	var logs syncBuffer
	cmd := exec.Command(accordBin, "server", "--addr", "127.0.0.1:0", "--partitions", "2",
		"--database-schema", schema, "--log-level", "debug", "--push-allow", "http://127.0.0.1:*",
		"--otlp-endpoint", "http://"+collector+"/v1/traces?api_key="+otlpKey, "--shutdown-timeout", "5s")
	cmd.Env = append(os.Environ(), "ACCORD_DATABASE_URL_FILE="+dbFile,
		"OTEL_EXPORTER_OTLP_HEADERS=x-api-key="+otlpHdr, "OTEL_BSP_SCHEDULE_DELAY=50")
	pr, pw := io.Pipe()
	defer pw.Close()
	cmd.Stderr = io.MultiWriter(&logs, pw)
	must(t, cmd.Start())
	defer cmd.Process.Kill()
	base := waitForURL(t, pr)

	var answers strings.Builder
	call := func(method, path, body string, want int) []byte {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, base+path, rd)
		must(t, err)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		res, err := http.DefaultClient.Do(req)
		must(t, err)
		defer res.Body.Close()
		data, err := io.ReadAll(res.Body)
		must(t, err)
		answers.Write(data)
		if res.StatusCode != want {
			t.Fatalf("%s %s: %d, want %d: %s", method, path, res.StatusCode, want, data)
		}
		return data
	}
	call("PUT", "/v1/topics/orders", `{}`, http.StatusCreated)
	call("PUT", "/v1/topics/orders/groups/hook", `{"max_deliveries": 1, "webhook": {"url": "http://`+hook+`/in?token=`+hookToken+`"}}`, http.StatusCreated)
	call("POST", "/v1/topics/orders/messages", `{"messages": [{"payload": {"n": 1}}]}`, http.StatusOK)
	// A saga, whose spans go to the collector that is not there.
	call("POST", "/v1/definitions", `{"name": "t", "version": 1, "steps": [{"name": "a", "kind": "pivot", "action": {"queue": "q", "name": "x"}}]}`, http.StatusCreated)
	call("POST", "/v1/sagas", `{"definition": "t", "input": {}}`, http.StatusCreated)
	// A refused request, an error answer.
	call("PUT", "/v1/topics/orders/groups/bad", `{"webhook": {"url": "ftp://`+hook+`/in?token=`+hookToken+`"}}`, http.StatusUnprocessableEntity)

	deadline := time.Now().Add(30 * time.Second)
	for {
		var list struct {
			DeadLetters []json.RawMessage `json:"dead_letters"`
		}
		must(t, json.Unmarshal(call("GET", "/v1/topics/orders/groups/hook/dead-letters", "", http.StatusOK), &list))
		if len(list.DeadLetters) > 0 {
			if !strings.Contains(string(list.DeadLetters[0]), hook) {
				t.Fatalf("the dead letter does not say which webhook failed: %s", list.DeadLetters[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no dead letter after 30s")
		}
		time.Sleep(50 * time.Millisecond) // polling the API for the outcome
	}
	group := call("GET", "/v1/topics/orders/groups/hook", "", http.StatusOK)
	if !strings.Contains(string(group), hook+"/in?token=") {
		t.Fatalf("the group does not show its webhook: %s", group)
	}

	must(t, cmd.Process.Signal(syscall.SIGTERM))
	if err := cmd.Wait(); err != nil {
		t.Fatalf("server exit: %v", err)
	}
	out := logs.String()
	for _, want := range []string{"store open", "shutting down", "stopped", "tracing on"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log lacks %q:\n%s", want, out)
		}
	}
	// The startup log says where the data lives, and which version runs.
	if !regexp.MustCompile(`msg="store open" database="?postgres://\S+ schema=` + schema + ` .* version=\S+`).MatchString(out) {
		t.Errorf("the startup log does not name the database, its schema and the version:\n%s", out)
	}
	checkClean(t, "the log", out)
	checkClean(t, "the API", answers.String())
}
