package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/sdktest"
)

// cli runs the real command tree in process, as main does, and returns
// the exit code main would use and what the command printed.
func cli(t *testing.T, server string, args ...string) (int, string) {
	t.Helper()
	return cliIn(t, server, "", args...)
}

// cliIn is cli with stdin as the command's standard input.
func cliIn(t *testing.T, server, stdin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return cliCtx(ctx, server, stdin, args...)
}

// cliCtx is cliIn under ctx, which stands for the signals main listens to.
func cliCtx(ctx context.Context, server, stdin string, args ...string) (int, string) {
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append(args, "--server", server))
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0, out.String()
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code, out.String() + err.Error()
	}
	return 1, out.String() + err.Error()
}

func wantCode(t *testing.T, got int, out string, want int) {
	t.Helper()
	if got != want {
		t.Fatalf("exit code %d, want %d; output:\n%s", got, want, out)
	}
}

const cliOrderDef = `name: order
version: 1
steps:
  - name: reserve
    action: {queue: stock}
    compensation: {queue: stock, name: release}
  - name: ship
    kind: pivot
    action: {queue: shipping}
`

func TestCLIDefinitionsAndSagas(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "order.yaml")
	if err := os.WriteFile(file, []byte(cliOrderDef), 0o600); err != nil {
		t.Fatal(err)
	}

	code, out := cli(t, s.URL, "definition", "apply", "-f", file)
	wantCode(t, code, out, 0)
	if !strings.Contains(out, "definition order version 1 registered") {
		t.Fatalf("apply: %s", out)
	}
	code, out = cli(t, s.URL, "definition", "apply", "-f", file)
	wantCode(t, code, out, 0)
	if !strings.Contains(out, "unchanged") {
		t.Fatalf("apply again: %s", out)
	}
	conflicting := filepath.Join(dir, "conflict.yml")
	if err := os.WriteFile(conflicting, []byte(strings.Replace(cliOrderDef, "release", "unreserve", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out = cli(t, s.URL, "definition", "apply", "-f", conflicting)
	wantCode(t, code, out, codeConflict)

	code, out = cli(t, s.URL, "definition", "list")
	wantCode(t, code, out, 0)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "order") {
		t.Fatalf("list:\n%s", out)
	}
	code, out = cli(t, s.URL, "definition", "get", "order", "-o", "json")
	wantCode(t, code, out, 0)
	var def client.Definition
	if err := json.Unmarshal([]byte(out), &def); err != nil || def.Name != "order" || def.Version != 1 {
		t.Fatalf("get -o json: %v\n%s", err, out)
	}
	code, out = cli(t, s.URL, "definition", "get", "order", "--version", "1")
	wantCode(t, code, out, 0)
	if !strings.Contains(out, `"compensation_retry"`) {
		t.Fatalf("get shows no canonical form:\n%s", out)
	}

	code, out = cli(t, s.URL, "saga", "start", "order", "--input", `{"sku":"a-1"}`, "--idempotency-key", "k1", "-o", "json")
	wantCode(t, code, out, 0)
	var started client.StartResult
	if err := json.Unmarshal([]byte(out), &started); err != nil || started.ID == "" || !started.Created {
		t.Fatalf("start: %v\n%s", err, out)
	}
	code, out = cli(t, s.URL, "saga", "start", "order", "--input", `{"sku":"a-1"}`, "--idempotency-key", "k1")
	wantCode(t, code, out, 0)
	if !strings.Contains(out, started.ID) || !strings.Contains(out, "exists") {
		t.Fatalf("start again: %s", out)
	}
	code, out = cli(t, s.URL, "saga", "start", "order", "--input", `{"sku":"b-2"}`, "--idempotency-key", "k1")
	wantCode(t, code, out, codeConflict)

	code, out = cli(t, s.URL, "saga", "get", started.ID)
	wantCode(t, code, out, 0)
	for _, want := range []string{"status:     running", "STEP", "reserve", "ship", "pivot"} {
		if !strings.Contains(out, want) {
			t.Fatalf("get lacks %q:\n%s", want, out)
		}
	}
	inputFile := filepath.Join(dir, "input.json")
	if err := os.WriteFile(inputFile, []byte(`{"sku":"c-3"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out = cli(t, s.URL, "saga", "start", "order", "--input", "@"+inputFile)
	wantCode(t, code, out, 0)
	second := strings.Fields(out)[1]

	code, out = cli(t, s.URL, "saga", "list", "--definition", "order", "--status", "running")
	wantCode(t, code, out, 0)
	if !strings.Contains(out, started.ID) || !strings.Contains(out, second) {
		t.Fatalf("list:\n%s", out)
	}
	code, out = cli(t, s.URL, "saga", "cancel", second, "--reason", "test")
	wantCode(t, code, out, 0)
	if !strings.Contains(out, "compensating") {
		t.Fatalf("cancel: %s", out)
	}
	code, out = cli(t, s.URL, "saga", "list", "--status", "compensating,cancelled", "-o", "json")
	wantCode(t, code, out, 0)
	var listed []client.SagaSummary
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed) != 1 || listed[0].ID != second {
		t.Fatalf("list by status: %v\n%s", err, out)
	}
	code, out = cli(t, s.URL, "saga", "retry", started.ID)
	wantCode(t, code, out, codeConflict)
	code, out = cli(t, s.URL, "saga", "discard", started.ID)
	wantCode(t, code, out, codeConflict)
	if !strings.Contains(out, "not quarantined") {
		t.Fatalf("discard a running saga: %s", out)
	}
}

func TestCLIDefinitionDisableDelete(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)
	s.Register(t, cliOrderDef)
	s.Register(t, strings.Replace(cliOrderDef, "version: 1", "version: 2", 1))

	code, out := cli(t, s.URL, "definition", "disable", "order", "2")
	wantCode(t, code, out, 0)
	if !strings.Contains(out, "definition order version 2 disabled") {
		t.Fatalf("disable: %s", out)
	}
	code, out = cli(t, s.URL, "definition", "list")
	wantCode(t, code, out, 0)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.Contains(lines[0], "ENABLED") ||
		!strings.Contains(lines[1], "true") || !strings.Contains(lines[2], "false") {
		t.Fatalf("list:\n%s", out)
	}
	code, out = cli(t, s.URL, "saga", "start", "order", "--version", "2")
	wantCode(t, code, out, codeConflict)
	code, out = cli(t, s.URL, "definition", "enable", "order", "2", "-o", "json")
	wantCode(t, code, out, 0)
	var def client.Definition
	if err := json.Unmarshal([]byte(out), &def); err != nil || !def.Enabled || def.Version != 2 {
		t.Fatalf("enable -o json: %v\n%s", err, out)
	}
	code, out = cli(t, s.URL, "saga", "start", "order")
	wantCode(t, code, out, 0)
	code, out = cli(t, s.URL, "definition", "delete", "order", "2")
	wantCode(t, code, out, codeConflict)
	if !strings.Contains(out, "used by 1 unfinished sagas") {
		t.Fatalf("delete in use: %s", out)
	}
	code, out = cli(t, s.URL, "definition", "delete", "order", "1")
	wantCode(t, code, out, 0)
	if !strings.Contains(out, "definition order version 1 deleted") {
		t.Fatalf("delete: %s", out)
	}
	code, out = cli(t, s.URL, "definition", "get", "order", "--version", "1")
	wantCode(t, code, out, codeNotFound)
	code, out = cli(t, s.URL, "definition", "delete", "order", "x")
	wantCode(t, code, out, codeUsage)
}

func TestCLIWaitAndWatch(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)
	s.Register(t, cliOrderDef)
	ctx := context.Background()

	// A participant: it completes reserve, answers shipping (the pivot)
	// with outcome, and, when the pivot failed, completes the compensation
	// of reserve.
	serve := func(outcome string) {
		for _, q := range []string{"stock", "shipping"} {
			tasks, err := s.Client.Poll(ctx, q, client.PollOptions{Wait: 10 * time.Second})
			if err != nil || len(tasks) != 1 {
				t.Errorf("poll %s: %v %v", q, tasks, err)
				return
			}
			o := client.OutcomeSuccess
			if q == "shipping" {
				o = outcome
			}
			if err := s.Client.Complete(ctx, client.TaskResult{TaskID: tasks[0].ID, ClaimToken: tasks[0].ClaimToken, Outcome: o}); err != nil {
				t.Errorf("complete: %v", err)
			}
		}
		if outcome == client.OutcomeFailure {
			tasks, err := s.Client.Poll(ctx, "stock", client.PollOptions{Wait: 10 * time.Second})
			if err != nil || len(tasks) != 1 || tasks[0].Phase != "compensation" {
				t.Errorf("poll compensation: %v %v", tasks, err)
				return
			}
			if err := s.Client.Complete(ctx, client.TaskResult{TaskID: tasks[0].ID, ClaimToken: tasks[0].ClaimToken, Outcome: client.OutcomeSuccess}); err != nil {
				t.Errorf("complete: %v", err)
			}
		}
	}

	done := make(chan struct{})
	go func() { defer close(done); serve(client.OutcomeSuccess) }()
	code, out := cli(t, s.URL, "saga", "start", "order", "--wait")
	<-done
	wantCode(t, code, out, 0)
	if !strings.Contains(out, "status:     completed") {
		t.Fatalf("start --wait:\n%s", out)
	}

	res, err := s.Client.StartSaga(ctx, client.StartRequest{Definition: "order"})
	if err != nil {
		t.Fatal(err)
	}
	done = make(chan struct{})
	go func() { defer close(done); serve(client.OutcomeFailure) }()
	code, out = cli(t, s.URL, "saga", "watch", res.ID)
	<-done
	wantCode(t, code, out, codeSagaFailed)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 3 || !strings.Contains(lines[0], "running") || !strings.Contains(out, "compensated") {
		t.Fatalf("watch:\n%s", out)
	}
}

// TestCLIWaitInterrupted checks that start --wait, interrupted while the
// saga runs, says which saga it started and how to follow it.
func TestCLIWaitInterrupted(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)
	s.Register(t, cliOrderDef)
	ctx, interrupt := context.WithCancel(context.Background())
	defer interrupt()
	go func() {
		// The saga's first task is out: the command waits now.
		_, _ = s.Client.Poll(ctx, "stock", client.PollOptions{Wait: 20 * time.Second})
		interrupt()
	}()
	code, out := cliCtx(ctx, s.URL, "", "saga", "start", "order", "--wait")
	if code == 0 {
		t.Fatalf("exit 0 after an interrupt:\n%s", out)
	}
	list, err := s.Client.ListSagas(context.Background(), client.ListOptions{})
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("list: %v %v", list, err)
	}
	id := list.Items[0].ID
	if !strings.Contains(out, id) || !strings.Contains(out, "accord saga watch "+id) || strings.Contains(out, "context canceled") {
		t.Fatalf("the interrupted wait does not say which saga it started (%s) and how to follow it:\n%s", id, out)
	}
}

func TestCLIErrors(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"name": "bad", "version": 1, "steps": [{"name": "a", "after": ["zz"], "action": {"queue": "q"}, "compensation": {"queue": "q"}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"saga", "get", "no-such-saga"}, codeNotFound, "not found"},
		{[]string{"saga", "cancel", "no-such-saga"}, codeNotFound, ""},
		{[]string{"saga", "watch", "no-such-saga"}, codeNotFound, ""},
		{[]string{"definition", "get", "nope"}, codeNotFound, ""},
		{[]string{"saga", "start", "nope"}, codeNotFound, ""},
		{[]string{"definition", "apply", "-f", bad}, codeUsage, "steps[0].after[0]"},
		{[]string{"definition", "apply"}, codeUsage, "--file"},
		{[]string{"definition", "apply", "-f", filepath.Join(dir, "missing.yaml")}, codeUsage, ""},
		{[]string{"saga", "start", "order", "--input", "{not json"}, codeUsage, "--input"},
		{[]string{"saga", "get"}, codeUsage, ""},
		{[]string{"saga", "get", "a", "b"}, codeUsage, ""},
		{[]string{"saga", "list", "--limit", "0"}, codeUsage, ""},
		{[]string{"saga", "list", "--status", "bogus"}, codeUsage, "query.status"},
		{[]string{"saga", "list", "--limit", "many"}, codeUsage, ""},
		{[]string{"saga", "list", "-o", "yaml"}, codeUsage, "--output"},
		{[]string{"saga", "frobnicate"}, codeUsage, "unknown command"},
		{[]string{"saga"}, codeUsage, ""},
	}
	for _, c := range cases {
		code, out := cli(t, s.URL, c.args...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("accord %s: exit %d, want %d with %q; output:\n%s", strings.Join(c.args, " "), code, c.code, c.want, out)
		}
	}
	// Nobody listening.
	code, out := cli(t, "http://127.0.0.1:1", "saga", "list")
	wantCode(t, code, out, codeUnavailable)
	code, out = cli(t, "not a url", "saga", "list")
	wantCode(t, code, out, codeUsage)
}

func TestCLIServerFromEnvironment(t *testing.T) {
	s := sdktest.NewServer(t)
	s.Register(t, cliOrderDef)
	t.Setenv("ACCORD_SERVER", s.URL)
	t.Setenv("ACCORD_OUTPUT", "json")
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"definition", "list"})
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	var items []client.DefinitionSummary
	if err := json.Unmarshal(out.Bytes(), &items); err != nil || len(items) != 1 {
		t.Fatalf("%v\n%s", err, out.String())
	}
}
