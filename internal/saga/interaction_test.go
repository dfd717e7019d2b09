package saga

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
)

// TestInteraction runs the scripts in testdata/*.txt. Each directive is an
// input to the saga; the expected output is the events and commands it
// produced. Regenerate expected output with
//
//	go test ./internal/saga -run TestInteraction -rewrite
//
// and review the diff. Directives:
//
//	define [file=NAME]            definition from the body (YAML/JSON) or testdata/NAME
//	start [id=ID] [seed=N] [now=D] saga input in the body (JSON)
//	result step=S attempt=N outcome=O [phase=compensation] [code=C] [msg=(TEXT)] [now=D]
//	                              output in the body (JSON)
//	fire TIMER [now=D]            TIMER is the timer id without the saga id;
//	                              now defaults to the timer's time
//	cancel [reason=(TEXT)] [now=D]
//	operator-retry [now=D]
//	state                         the saga's state, one line per step
//
// D is an offset from the start of time (2025-01-01T00:00:00Z), such as
// 1m30s. The harness checks replay, JSON round trips and command
// consistency after every directive (see harness).
func TestInteraction(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no scripts in testdata")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			var h *harness
			var def *Definition
			datadriven.RunTest(t, file, func(t *testing.T, d *datadriven.TestData) string {
				now := func() time.Time {
					if !d.HasArg("now") {
						return time.Time{}
					}
					var s string
					d.ScanArgs(t, "now", &s)
					off, err := time.ParseDuration(s)
					if err != nil {
						d.Fatalf(t, "now: %v", err)
					}
					return t0.Add(off)
				}
				str := func(key string) string {
					arg, ok := d.Arg(key)
					if !ok {
						return ""
					}
					return strings.Join(arg.Vals, ", ")
				}
				needSaga := func() {
					if h == nil || h.state == nil {
						d.Fatalf(t, "%s before start", d.Cmd)
					}
				}
				switch d.Cmd {
				case "define":
					doc := []byte(d.Input)
					if f := str("file"); f != "" {
						b, err := os.ReadFile(filepath.Join("testdata", f))
						if err != nil {
							d.Fatalf(t, "%v", err)
						}
						doc = b
					}
					var err error
					def, err = ParseDefinition(doc)
					if err != nil {
						return "error: " + err.Error() + "\n"
					}
					h = newHarness(t, def)
					return "ok\n"
				case "start":
					if h == nil {
						d.Fatalf(t, "start before define")
					}
					h.t = t
					in := StartInput{SagaID: "s1", Input: []byte(d.Input), Now: now()}
					if id := str("id"); id != "" {
						in.SagaID = id
					}
					if s := str("seed"); s != "" {
						n, err := strconv.ParseUint(s, 10, 64)
						if err != nil {
							d.Fatalf(t, "seed: %v", err)
						}
						in.Seed = n
					}
					evs, cmds, err := h.start(in)
					return formatStep(evs, cmds, err)
				case "result":
					needSaga()
					in := Input{Kind: InputStepResult, Now: now(), Step: str("step"), Phase: Phase(str("phase")),
						Outcome: Outcome(str("outcome")), Output: []byte(d.Input),
						Error: ErrorInfo{Code: str("code"), Message: str("msg")}}
					d.ScanArgs(t, "attempt", &in.Attempt)
					evs, cmds, err := h.step(in)
					return formatStep(evs, cmds, err)
				case "fire":
					needSaga()
					if len(d.CmdArgs) == 0 {
						d.Fatalf(t, "fire needs a timer")
					}
					id := h.state.SagaID + "/" + d.CmdArgs[0].Key
					if at := now(); !at.IsZero() {
						evs, cmds, err := h.step(Input{Kind: InputTimerFired, TimerID: id, Now: at})
						return formatStep(evs, cmds, err)
					}
					evs, cmds, err := h.fire(id)
					return formatStep(evs, cmds, err)
				case "cancel":
					needSaga()
					evs, cmds, err := h.step(Input{Kind: InputCancel, Now: now(), Reason: str("reason")})
					return formatStep(evs, cmds, err)
				case "operator-retry":
					needSaga()
					evs, cmds, err := h.step(Input{Kind: InputOperatorRetry, Now: now()})
					return formatStep(evs, cmds, err)
				case "state":
					needSaga()
					return formatState(h.state)
				}
				d.Fatalf(t, "unknown directive %q", d.Cmd)
				return ""
			})
		})
	}
}
