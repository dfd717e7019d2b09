// Command testsum runs go test with -json and prints what a person needs
// to read: every package's result line, the output of every failed test in
// full, the build errors, and at the end the failed tests and the counts.
// The last line is the counts alone,
//
//	tests: 1234 passed, 0 failed, 3 skipped
//
// which CI reads. It exits non-zero when a test or a package failed, or
// when go test itself did. Its arguments are go test's:
//
//	go run ./internal/tools/testsum -race -count=1 ./...
//
// With -v among the arguments the output of every test is shown, passed
// or not. Tests are counted with their subtests, as go test reports them.
// A test that started but never ended (its binary timed out or crashed)
// counts as failed.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs go test -json with args and summarises its output on out; it
// returns the exit code.
func run(args []string, out, errOut io.Writer) int {
	cmd := exec.Command("go", append([]string{"test", "-json"}, args...)...)
	cmd.Stderr = errOut
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(errOut, "testsum:", err)
		return 2
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(errOut, "testsum:", err)
		return 2
	}
	s := newSummary(out)
	s.verbose = slices.Contains(args, "-v")
	readErr := s.read(stdout)
	waitErr := cmd.Wait()
	s.finish()
	switch {
	case readErr != nil:
		fmt.Fprintln(errOut, "testsum: reading go test's output:", readErr)
		return 2
	case s.failed():
		return 1
	case waitErr != nil:
		// go test failed without a failed test or package to show for it
		// (a bad flag, no packages): its stderr said why.
		var exit *exec.ExitError
		if errors.As(waitErr, &exit) {
			return max(exit.ExitCode(), 1)
		}
		fmt.Fprintln(errOut, "testsum: go test:", waitErr)
		return 2
	}
	return 0
}

// event is one line of go test -json (see go doc test2json).
type event struct {
	Action      string
	Package     string
	ImportPath  string // build-output and build-fail
	Test        string
	Output      string
	FailedBuild string
}

// counts of one kind of result.
type counts struct{ passed, failed, skipped int }

func (c counts) String() string {
	return fmt.Sprintf("%d passed, %d failed, %d skipped", c.passed, c.failed, c.skipped)
}

type testKey struct{ pkg, test string }

type summary struct {
	out       io.Writer
	verbose   bool // show the output of the tests that pass or skip too
	tests     counts
	packages  counts
	running   map[testKey][]string // output of the tests under way
	started   []testKey            // the order they started in
	pkgOutput map[string][]string  // package-level output, per package
	failures  []string             // "pkg TestName", in the order they failed
}

func newSummary(out io.Writer) *summary {
	return &summary{out: out, running: map[testKey][]string{}, pkgOutput: map[string][]string{}}
}

func (s *summary) failed() bool { return s.tests.failed > 0 || s.packages.failed > 0 }

// read consumes the event stream. A line that is not an event (go test
// prints a few, e.g. when a test binary writes to its stdout after its
// tests ended) is passed through.
func (s *summary) read(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Fprintf(s.out, "%s\n", line)
			continue
		}
		s.event(e)
	}
	return sc.Err()
}

func (s *summary) event(e event) {
	switch e.Action {
	case "build-output":
		fmt.Fprint(s.out, e.Output)
		return
	case "build-fail":
		return
	}
	if e.Test == "" {
		s.packageEvent(e)
		return
	}
	k := testKey{e.Package, e.Test}
	switch e.Action {
	case "run":
		s.running[k] = nil
		s.started = append(s.started, k)
	case "output":
		if _, ok := s.running[k]; ok && !framing(e.Output) {
			s.running[k] = append(s.running[k], e.Output)
		}
	case "pass", "skip":
		if e.Action == "pass" {
			s.tests.passed++
		} else {
			s.tests.skipped++
		}
		if s.verbose {
			s.print(s.running[k])
		}
		delete(s.running, k)
	case "fail":
		s.testFailed(k, "")
	}
}

// testFailed prints a failed test's output, with note after it if any.
func (s *summary) testFailed(k testKey, note string) {
	s.tests.failed++
	s.print(s.running[k])
	if note != "" {
		fmt.Fprintln(s.out, note)
	}
	delete(s.running, k)
	s.failures = append(s.failures, k.pkg+" "+k.test)
}

func (s *summary) packageEvent(e event) {
	switch e.Action {
	case "output":
		s.pkgOutput[e.Package] = append(s.pkgOutput[e.Package], e.Output)
		return
	case "pass", "skip":
		if e.Action == "pass" {
			s.packages.passed++
		} else {
			s.packages.skipped++
		}
		for _, l := range s.pkgOutput[e.Package] {
			if strings.HasPrefix(l, "ok ") || strings.HasPrefix(l, "? ") {
				fmt.Fprint(s.out, l)
			}
		}
	case "fail":
		s.packages.failed++
		// Tests still under way when their binary failed: a timeout or
		// a crash, whose story is in the package output below.
		for _, k := range s.started {
			if _, ok := s.running[k]; ok && k.pkg == e.Package {
				s.testFailed(k, "--- FAIL: "+k.test+" (did not finish)")
			}
		}
		for _, l := range s.pkgOutput[e.Package] {
			if !framing(l) {
				fmt.Fprint(s.out, l)
			}
		}
		if e.FailedBuild != "" {
			s.failures = append(s.failures, e.Package+" [build failed]")
		} else if !slices.ContainsFunc(s.failures, func(f string) bool { return strings.HasPrefix(f, e.Package+" ") }) {
			s.failures = append(s.failures, e.Package+" [package failed]")
		}
	default:
		return
	}
	delete(s.pkgOutput, e.Package)
	s.started = slices.DeleteFunc(s.started, func(k testKey) bool { return k.pkg == e.Package })
}

func (s *summary) print(lines []string) {
	for _, l := range lines {
		fmt.Fprint(s.out, l)
	}
}

// finish prints the failures and the counts, the counts last.
func (s *summary) finish() {
	// A package whose end never came (go test was killed): its tests
	// under way failed.
	for _, k := range s.started {
		if _, ok := s.running[k]; ok {
			s.testFailed(k, "--- FAIL: "+k.test+" (did not finish)")
		}
	}
	fmt.Fprintln(s.out)
	for _, f := range s.failures {
		fmt.Fprintln(s.out, "FAIL", f)
	}
	fmt.Fprintln(s.out, "packages:", s.packages)
	fmt.Fprintln(s.out, "tests:", s.tests)
}

// framing reports whether a line is one of go test's markers of parallel
// tests pausing and resuming, which mean nothing once a test's output is
// gathered in one place.
func framing(l string) bool {
	return strings.HasPrefix(l, "=== PAUSE ") || strings.HasPrefix(l, "=== CONT ") || strings.HasPrefix(l, "=== NAME ")
}
