package main

import (
	"bytes"
	"strings"
	"testing"
)

// summarise runs testsum on go test's args and returns its exit code and
// output.
func summarise(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(append([]string{"-count=1"}, args...), &out, &errOut)
	return code, out.String() + errOut.String()
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

func wantContains(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

func TestFailuresShownAndCounted(t *testing.T) {
	code, out := summarise(t, "./testdata/mixed", "./testdata/green")
	if code == 0 {
		t.Errorf("exit code 0 with failed tests:\n%s", out)
	}
	if got, want := lastLine(out), "tests: 3 passed, 3 failed, 1 skipped"; got != want {
		t.Errorf("last line %q, want %q\n%s", got, want, out)
	}
	wantContains(t, out, "the detail of the failure", "--- FAIL: TestFail", "subtest b broke", "--- FAIL: TestSub/b",
		"packages: 1 passed, 1 failed, 0 skipped", "testdata/mixed TestFail\n")
	if strings.Contains(out, "not shown") {
		t.Errorf("a passing test's log is shown:\n%s", out)
	}
}

func TestGreenRunExitsZero(t *testing.T) {
	code, out := summarise(t, "./testdata/green")
	if code != 0 {
		t.Errorf("exit code %d for a green run:\n%s", code, out)
	}
	if got, want := lastLine(out), "tests: 1 passed, 0 failed, 0 skipped"; got != want {
		t.Errorf("last line %q, want %q\n%s", got, want, out)
	}
	wantContains(t, out, "ok ")
}

func TestVerboseShowsPassingOutput(t *testing.T) {
	code, out := summarise(t, "-v", "./testdata/green")
	if code != 0 {
		t.Errorf("exit code %d for a green run:\n%s", code, out)
	}
	wantContains(t, out, "not shown: the test passed", "--- PASS: TestPass")
}

func TestBuildFailureFails(t *testing.T) {
	code, out := summarise(t, "./testdata/broken")
	if code == 0 {
		t.Errorf("exit code 0 for a package that does not build:\n%s", out)
	}
	wantContains(t, out, "undefinedName", "packages: 0 passed, 1 failed, 0 skipped", "[build failed]")
	if got, want := lastLine(out), "tests: 0 passed, 0 failed, 0 skipped"; got != want {
		t.Errorf("last line %q, want %q\n%s", got, want, out)
	}
}

func TestGoTestErrorFails(t *testing.T) {
	code, out := summarise(t, "-no-such-flag", "./testdata/green")
	if code == 0 {
		t.Errorf("exit code 0 when go test refused its flags:\n%s", out)
	}
}

// A test binary that timed out leaves tests that never ended: they count
// as failed, and the panic that ended them is shown.
func TestUnfinishedTestsFail(t *testing.T) {
	stream := `{"Action":"start","Package":"p"}
{"Action":"run","Package":"p","Test":"TestSlow"}
{"Action":"output","Package":"p","Test":"TestSlow","Output":"=== RUN   TestSlow\n"}
{"Action":"run","Package":"p","Test":"TestQuick"}
{"Action":"pass","Package":"p","Test":"TestQuick"}
{"Action":"output","Package":"p","Output":"panic: test timed out after 1s\n"}
{"Action":"output","Package":"p","Output":"FAIL\tp\t1.0s\n"}
{"Action":"fail","Package":"p"}
`
	var out bytes.Buffer
	s := newSummary(&out)
	if err := s.read(strings.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	s.finish()
	if !s.failed() {
		t.Errorf("a timed-out run did not fail")
	}
	if got, want := lastLine(out.String()), "tests: 1 passed, 1 failed, 0 skipped"; got != want {
		t.Errorf("last line %q, want %q\n%s", got, want, out.String())
	}
	wantContains(t, out.String(), "TestSlow (did not finish)", "panic: test timed out", "FAIL p TestSlow")
}
