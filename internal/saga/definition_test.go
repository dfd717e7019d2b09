package saga

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// minimal wraps step YAML into a definition document.
func minimal(steps string) string {
	return "name: t\nversion: 1\nsteps:\n" + steps
}

const okStep = "  - name: a\n    action: {queue: q}\n    compensation: {queue: q}\n"

func TestParseDefinitionInvalid(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // problems, "path: message"
	}{
		{"empty", "", []string{"empty document"}},
		{"not an object", "[1, 2]", []string{"must be an object, not a list"}},
		{"bad json", `{"name": "x",}`, []string{"invalid JSON at byte 13: invalid character '}' looking for beginning of object key string"}},
		{"trailing json", `{"name": "x"} {}`, []string{"invalid JSON: unexpected data after the top-level value"}},
		{"duplicate json key", `{"name": "x", "name": "y"}`, []string{`invalid JSON: duplicate key "name"`}},
		{"duplicate yaml key", "name: x\nname: y\n", []string{`invalid YAML at line 2: duplicate key "name"`}},
		{"yaml alias", "name: &n x\nversion: 1\ndescription: *n\n", []string{"invalid YAML at line 3: aliases are not supported"}},
		{"yaml custom tag", "name: !weird x\n", []string{"invalid YAML at line 1: tag !weird is not supported"}},
		{"two yaml documents", "name: x\n---\nname: y\n", []string{"invalid YAML: more than one document"}},
		{"missing everything", "description: hi\n", []string{"name: is required", "version: is required", "steps: is required"}},
		{"unknown fields", "name: t\nversion: 1\nowner: me\nsteps:\n  - name: a\n    actoin: {queue: q}\n    action: {queue: q, timeout: 1s}\n    compensation: {queue: q}\n", []string{
			"owner: unknown field",
			"steps[0].actoin: unknown field",
			"steps[0].action.timeout: unknown field",
		}},
		{"wrong types", "name: 7\nversion: '1'\nsteps: {}\n", []string{
			"name: must be a string, not a number",
			"version: must be an integer, not a string",
			"steps: must be a list, not an object",
		}},
		{"version zero", "name: t\nversion: 0\nsteps:\n" + okStep, []string{"version: must be at least 1"}},
		{"version fraction", "name: t\nversion: 1.5\nsteps:\n" + okStep, []string{"version: must be an integer between -2147483648 and 2147483647, not 1.5"}},
		{"no steps", "name: t\nversion: 1\nsteps: []\n", []string{"steps: must have at least one step"}},
		{"bad names", "name: Order Saga\nversion: 1\nsteps:\n  - name: Pay\n    action: {queue: q}\n    compensation: {queue: q}\n  - name: ''\n    action: {queue: q}\n    compensation: {queue: q}\n", []string{
			`name: "Order Saga" may only contain a-z, 0-9, '_', '-' and '.'`,
			`steps[0].name: "Pay" may only contain a-z, 0-9, '_' and '-'`,
			"steps[1].name: must not be empty",
		}},
		{"long name", "name: " + strings.Repeat("x", 129) + "\nversion: 1\nsteps:\n" + okStep, []string{"name: is 129 bytes; the limit is 128"}},
		{"duplicate steps", minimal(okStep + okStep), []string{`steps[1].name: duplicate step name "a" (also steps[0])`}},
		{"unknown after", minimal("  - name: a\n    after: [b, a, '']\n    action: {queue: q}\n    compensation: {queue: q}\n"), []string{
			`steps[0].after[0]: unknown step "b"`,
			`steps[0].after[1]: step "a" cannot be after itself`,
			"steps[0].after[2]: must not be empty",
		}},
		{"after twice", minimal(okStep + "  - name: b\n    after: [a, a]\n    action: {queue: q}\n    compensation: {queue: q}\n"), []string{
			`steps[1].after[1]: step "a" is listed twice`,
		}},
		{"after null", minimal("  - name: a\n    after:\n    action: {queue: q}\n    compensation: {queue: q}\n"), []string{
			"steps[0].after: must be a list (write after: [] for a step that depends on nothing)",
		}},
		{"cycle", minimal(
			"  - name: a\n    after: [c]\n    action: {queue: q}\n    compensation: {queue: q}\n" +
				"  - name: b\n    action: {queue: q}\n    compensation: {queue: q}\n" +
				"  - name: c\n    action: {queue: q}\n    compensation: {queue: q}\n"), []string{
			`steps[0].after: dependency cycle: "a" → "c" → "b" → "a" (each step is after the next)`,
		}},
		{"targets", minimal(
			"  - name: a\n    action: {name: x}\n    compensation: {queue: q, http: 'https://x'}\n" +
				"  - name: b\n    action: {http: 'ftp://host/x'}\n    compensation: {http: '/relative'}\n" +
				"  - name: c\n    action: {http: 'https://u:p@host/x'}\n    compensation: {queue: 'bad queue', name: 'a b'}\n" +
				"  - name: d\n    action: [q]\n    compensation: 'q'\n"), []string{
			"steps[0].action: needs exactly one of queue, http or topic",
			"steps[0].compensation: needs exactly one of queue, http or topic",
			`steps[1].action.http: "ftp://host/x" must be an absolute http:// or https:// URL`,
			`steps[1].compensation.http: "/relative" must be an absolute http:// or https:// URL`,
			"steps[2].action.http: must not carry credentials in the URL",
			`steps[2].compensation.queue: "bad queue" may only contain letters, digits, '_', '-', '.' and ':'`,
			`steps[2].compensation.name: "a b" may only contain letters, digits, '_', '-', '.' and ':'`,
			"steps[3].action: must be an object, not a list",
			"steps[3].compensation: must be an object, not a string",
		}},
		{"missing action and compensation", minimal("  - name: a\n"), []string{
			"steps[0].action: is required",
			"steps[0].compensation: is required for a compensatable step (or set kind to pivot or retriable)",
		}},
		{"durations", "name: t\nversion: 1\ntimeout: -1s\nsteps:\n  - name: a\n    action: {queue: q}\n    compensation: {queue: q}\n    attempt_timeout: 10\n    step_timeout: 2d\n    retry: {initial_interval: 0s, max_interval: 9000h}\n", []string{
			"timeout: must not be negative, not -1s",
			"steps[0].retry.max_interval: must be at most 8760h0m0s, not 9000h",
			"steps[0].attempt_timeout: must be a string, not a number",
			`steps[0].step_timeout: invalid duration "2d" (write it like "1.5s", "250ms" or "2m")`,
			"steps[0].retry.initial_interval: must be at least 1ms, not 0s",
		}},
		{"retry ranges", minimal("  - name: a\n    action: {queue: q}\n    compensation: {queue: q}\n    retry: {initial_interval: 2s, max_interval: 1s, multiplier: 0.5, max_attempts: 0, jitter: 1.5, non_retryable_errors: ['']}\n    compensation_retry: {multiplier: 101, max_attempts: 10001, jitter: -0.1}\n"), []string{
			"steps[0].retry.max_interval: (1s) must be at least initial_interval (2s)",
			"steps[0].retry.multiplier: must be between 1 and 100, not 0.5",
			"steps[0].retry.max_attempts: must be between 1 and 10000, not 0",
			"steps[0].retry.jitter: must be between 0 and 1, not 1.5",
			"steps[0].retry.non_retryable_errors[0]: must be 1 to 128 bytes long",
			"steps[0].compensation_retry.multiplier: must be between 1 and 100, not 101",
			"steps[0].compensation_retry.max_attempts: must be between 1 and 10000, not 10001",
			"steps[0].compensation_retry.jitter: must be between 0 and 1, not -0.1",
		}},
		{"bad kind", minimal("  - name: a\n    kind: optional\n    action: {queue: q}\n    compensation: {queue: q}\n"), []string{
			`steps[0].kind: must be compensatable, pivot or retriable, not "optional"`,
		}},
		{"two pivots", minimal("  - name: a\n    kind: pivot\n    action: {queue: q}\n  - name: b\n    kind: pivot\n    action: {queue: q}\n"), []string{
			`steps[1].kind: only one pivot step is allowed; steps[0] "a" is already the pivot`,
		}},
		{"pivot and retriable extras", minimal(
			"  - name: p\n    kind: pivot\n    action: {queue: q}\n    compensation: {queue: q}\n    step_timeout: 1m\n" +
				"  - name: r\n    kind: retriable\n    action: {queue: q}\n    compensation: {queue: q}\n    compensation_retry: {max_attempts: 3}\n    step_timeout: 1m\n    retry: {max_attempts: 3, non_retryable_errors: [x]}\n"), []string{
			"steps[0].compensation: is not allowed on a pivot step: the pivot is never compensated",
			"steps[0].step_timeout: is not allowed on a pivot step: the pivot's outcome must be known, so it is retried until it answers",
			"steps[1].compensation: is not allowed on a retriable step: retriable steps run after the pivot and are never compensated",
			"steps[1].step_timeout: is not allowed on a retriable step: it is retried until it succeeds",
			"steps[1].retry.max_attempts: is not allowed on a retriable step: it is retried until it succeeds",
			"steps[1].retry.non_retryable_errors: is not allowed on a retriable step: it is retried until it succeeds",
		}},
		{"compensation retry without compensation", minimal("  - name: p\n    kind: pivot\n    action: {queue: q}\n    compensation_retry: {max_attempts: 3}\n"), []string{
			"steps[0].compensation_retry: is set but the step has no compensation",
		}},
		{"retriable without pivot", minimal(okStep + "  - name: r\n    kind: retriable\n    action: {queue: q}\n"), []string{
			`steps[1].kind: retriable step "r" needs a pivot step to come after: retriable steps only run once the saga cannot be undone`,
		}},
		{"kinds around the pivot", minimal(
			"  - name: a\n    action: {queue: q}\n    compensation: {queue: q}\n" +
				"  - name: r\n    kind: retriable\n    after: []\n    action: {queue: q}\n" +
				"  - name: p\n    kind: pivot\n    after: [a]\n    action: {queue: q}\n" +
				"  - name: late\n    after: [p]\n    action: {queue: q}\n    compensation: {queue: q}\n"), []string{
			`steps[1].kind: retriable step "r" must run after the pivot "p" (make it after the pivot, directly or through another step)`,
			`steps[3].kind: compensatable step "late" must run before the pivot "p" (make the pivot after it, directly or through another step): nothing can be undone once the pivot succeeded`,
		}},
		{"templates", minimal(
			"  - name: a\n    action: {queue: q}\n    compensation: {queue: q}\n    input: {x: '${steps.a.output}', y: ['${input', '${saga.name}'], z: '${steps.b.output.id}'}\n" +
				"  - name: b\n    after: []\n    action: {queue: q}\n    compensation: {queue: q}\n    input: '${steps.a.output} ${steps.nope.output} ${env.HOME} ${input..x} ${steps.a}'\n"), []string{
			`steps[0].input.y[0]: unterminated reference "${input" (a reference ends with })`,
			"steps[0].input.y[1]: reference ${saga.name}: the only saga field is ${saga.id}",
			"steps[0].input: ${steps.a.output} refers to the step's own output, which does not exist yet at dispatch",
			`steps[0].input: ${steps.b.output.id} reads step "b", which does not run before "a" (add it to after, directly or through another step)`,
			"steps[1].input: reference ${env.HOME}: must start with input, steps or saga",
		}},
		{"template refs after syntax error", minimal(okStep +
			"  - name: b\n    after: []\n    action: {queue: q}\n    compensation: {queue: q}\n    input: '${steps.a.output} ${steps.nope.output}'\n"), []string{
			`steps[1].input: ${steps.a.output} reads step "a", which does not run before "b" (add it to after, directly or through another step)`,
			`steps[1].input: ${steps.nope.output} names unknown step "nope"`,
		}},
		{"template bad segments", minimal("  - name: a\n    action: {queue: q}\n    compensation: {queue: q}\n    input: ['${input..x}', '${steps.a}', '${input.a b}']\n"), []string{
			"steps[0].input[0]: reference ${input..x}: path segments must be non-empty [A-Za-z0-9_-]",
			"steps[0].input[1]: reference ${steps.a}: step references have the form ${steps.NAME.output...}",
			"steps[0].input[2]: reference ${input.a b}: path segments must be non-empty [A-Za-z0-9_-]",
		}},
		{"too deep", "name: t\nversion: 1\nsteps:\n  - name: a\n    action: {queue: q}\n    compensation: {queue: q}\n    input: " + strings.Repeat("[", 40) + strings.Repeat("]", 40) + "\n", []string{
			"document nested deeper than 32 levels",
		}},
		{"too big", "name: t\ndescription: " + strings.Repeat("x", MaxDefinitionBytes) + "\n", []string{
			"document is 262166 bytes; the limit is 262144",
		}},
		{"yaml infinity", minimal("  - name: a\n    action: {queue: q}\n    compensation: {queue: q}\n    input: .inf\n"), []string{
			"invalid YAML at line 7: number .inf is not allowed",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def, err := ParseDefinition([]byte(tt.doc))
			if err == nil {
				t.Fatalf("accepted: %s", def.Canonical())
			}
			if !errors.Is(err, ErrInvalidDefinition) {
				t.Fatalf("error %v does not wrap ErrInvalidDefinition", err)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %T is not a *ValidationError", err)
			}
			var got []string
			for _, p := range ve.Problems {
				got = append(got, p.String())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidationErrorMessage(t *testing.T) {
	_, err := ParseDefinition([]byte("name: t\nversion: 0\nsteps: []\n"))
	want := "saga: invalid definition: 2 problems: version: must be at least 1; steps: must have at least one step"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	_, err = ParseDefinition([]byte("name: t\nversion: 0\nsteps:\n" + okStep))
	want = "saga: invalid definition: version: must be at least 1"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
}

func TestValidationErrorBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("name: t\nversion: 1\nsteps:\n")
	for i := 0; i < 300; i++ {
		b.WriteString("  - name: a\n    action: {queue: q}\n    compensation: {queue: q}\n")
	}
	_, err := ParseDefinition([]byte(b.String()))
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got %v", err)
	}
	if len(ve.Problems) != maxProblems+1 || ve.Problems[maxProblems].Message != "and 199 more problems" {
		t.Fatalf("got %d problems, last %q", len(ve.Problems), ve.Problems[len(ve.Problems)-1])
	}
}

func TestParseDefinitionOrderSaga(t *testing.T) {
	doc, err := os.ReadFile("testdata/order.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(doc), "\n"); n > 22 {
		t.Errorf("the order saga takes %d lines; it must stay readable in about 20", n)
	}
	def, err := ParseDefinition(doc)
	if err != nil {
		t.Fatal(err)
	}
	if def.Name != "order" || def.Version != 1 || len(def.Steps) != 4 || def.Pivot() != "shipping" {
		t.Fatalf("unexpected definition %s", def.Canonical())
	}
	// Defaults filled in.
	pay, _ := def.Step("payment")
	want := RetryPolicy{InitialInterval: DefaultInitialInterval, MaxInterval: DefaultMaxInterval, Multiplier: 2, MaxAttempts: 3, Jitter: 0.2, NonRetryableErrors: []string{"card_declined"}}
	if diff := cmp.Diff(want, pay.Retry); diff != "" {
		t.Errorf("payment retry (-want +got):\n%s", diff)
	}
	wantComp := RetryPolicy{InitialInterval: DefaultCompensationInitialInterval, MaxInterval: DefaultCompensationMaxInterval, Multiplier: 2, MaxAttempts: DefaultCompensationMaxAttempts, Jitter: 0.2}
	if diff := cmp.Diff(wantComp, pay.CompensationRetry); diff != "" {
		t.Errorf("payment compensation retry (-want +got):\n%s", diff)
	}
	if pay.AttemptTimeout != DefaultAttemptTimeout || pay.StepTimeout != 0 {
		t.Errorf("payment timeouts %s %s", pay.AttemptTimeout, pay.StepTimeout)
	}
	if diff := cmp.Diff([]string{"order"}, pay.After); diff != "" {
		t.Errorf("payment after (-want +got):\n%s", diff)
	}
	first, _ := def.Step("order")
	if first.After == nil || len(first.After) != 0 {
		t.Errorf("first step after = %#v, want explicit empty", first.After)
	}
	ship, _ := def.Step("shipping")
	if ship.Compensation != nil || ship.CompensationRetry.MaxAttempts != 0 {
		t.Errorf("pivot has compensation settings: %+v", ship)
	}
	if first.Compensation.Name != "cancel_order" || ship.Action.Name != "book" {
		t.Errorf("target names %q %q", first.Compensation.Name, ship.Action.Name)
	}
}

func TestParseDefinitionDefaultNames(t *testing.T) {
	def, err := ParseDefinition([]byte(minimal(okStep)))
	if err != nil {
		t.Fatal(err)
	}
	if def.Steps[0].Action.Name != "a" || def.Steps[0].Compensation.Name != "compensate_a" {
		t.Fatalf("default target names: %+v %+v", def.Steps[0].Action, def.Steps[0].Compensation)
	}
}

func TestParseDefinitionTopicTarget(t *testing.T) {
	doc := `{"name":"n","version":1,"steps":[{"name":"a","action":{"queue":"q"},"compensation":{"topic":"order-events"}}]}`
	def, err := ParseDefinition([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if c := def.Steps[0].Compensation; c.Topic != "order-events" || c.Queue != "" || c.HTTP != "" {
		t.Fatalf("compensation target = %+v", c)
	}
	both := `{"name":"n","version":1,"steps":[{"name":"a","action":{"queue":"q","topic":"t"},"compensation":{"topic":"bad/name"}}]}`
	_, err = ParseDefinition([]byte(both))
	for _, want := range []string{"steps[0].action: needs exactly one of queue, http or topic", "steps[0].compensation.topic:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to contain %q", err, want)
		}
	}
}

func TestParseDefinitionLongInitialIntervalLiftsDefaultCap(t *testing.T) {
	def, err := ParseDefinition([]byte(minimal("  - name: a\n    action: {queue: q}\n    compensation: {queue: q}\n    retry: {initial_interval: 2m}\n")))
	if err != nil {
		t.Fatal(err)
	}
	if got := def.Steps[0].Retry.MaxInterval; got != Duration(2*60e9) {
		t.Fatalf("max interval %s, want 2m", got)
	}
}

// The same definition written in JSON, in YAML, and with every default
// spelled out has one canonical form, and parsing that form gives it back.
func TestCanonicalSameForJSONAndYAML(t *testing.T) {
	yamlDoc, err := os.ReadFile("testdata/order.yaml")
	if err != nil {
		t.Fatal(err)
	}
	jsonDoc := `{
	  "name": "order", "version": 1, "timeout": "600s",
	  "steps": [
	    {"name": "order", "action": {"queue": "orders", "name": "create_order"},
	     "compensation": {"queue": "orders", "name": "cancel_order"}},
	    {"name": "payment", "action": {"queue": "payments", "name": "charge"},
	     "compensation": {"queue": "payments", "name": "refund"},
	     "input": {"order_id": "${steps.order.output.id}", "amount": "${input.total}"},
	     "retry": {"max_attempts": 3, "non_retryable_errors": ["card_declined"], "multiplier": 2.0}},
	    {"name": "inventory", "after": ["payment"], "kind": "compensatable",
	     "action": {"queue": "inventory", "name": "reserve"},
	     "compensation": {"queue": "inventory", "name": "release"},
	     "input": {"order_id": "${steps.order.output.id}", "items": "${input.items}"},
	     "attempt_timeout": "30000ms"},
	    {"name": "shipping", "kind": "pivot",
	     "action": {"http": "https://shipping.example.com/v1/shipments", "name": "book"},
	     "input": {"order_id": "${steps.order.output.id}", "address": "${input.address}"}}
	  ]
	}`
	fromYAML, err := ParseDefinition(yamlDoc)
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := ParseDefinition([]byte(jsonDoc))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(fromYAML.Canonical()), string(fromJSON.Canonical())); diff != "" {
		t.Fatalf("canonical forms differ (-yaml +json):\n%s", diff)
	}
	if fromYAML.Hash() != fromJSON.Hash() {
		t.Fatal("hashes differ")
	}
	again, err := ParseDefinition(fromYAML.Canonical())
	if err != nil {
		t.Fatal(err)
	}
	if string(again.Canonical()) != string(fromYAML.Canonical()) {
		t.Fatalf("canonical form is not a fixed point:\n%s\n%s", again.Canonical(), fromYAML.Canonical())
	}
}

func TestCanonicalTemplateValues(t *testing.T) {
	y := minimal("  - name: a\n    action: {queue: q}\n    compensation: {queue: q}\n    input: {b: 10.50, a: [1, true, null, 'x<y'], n: 1e3, big: 12345678901234567890}\n")
	j := `{"name":"t","version":1,"steps":[{"name":"a","action":{"queue":"q"},"compensation":{"queue":"q"},"input":{"b":10.5,"a":[1,true,null,"x<y"],"n":1000,"big":1.2345678901234567e19}}]}`
	dy, err := ParseDefinition([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	dj, err := ParseDefinition([]byte(j))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"b":10.5,"a":[1,true,null,"x<y"],"n":1000,"big":1.2345678901234567e+19}`
	if got := string(dy.Steps[0].Input); got != want {
		t.Errorf("yaml input %s, want %s", got, want)
	}
	if got := string(dj.Steps[0].Input); got != want {
		t.Errorf("json input %s, want %s", got, want)
	}
}

func TestParseDefinitionLimits(t *testing.T) {
	var b strings.Builder
	b.WriteString("name: t\nversion: 1\nsteps:\n")
	for i := 0; i <= MaxSteps; i++ {
		b.WriteString("- {name: s, action: {queue: q}}\n")
	}
	_, err := ParseDefinition([]byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "steps: has 1001 steps; the limit is 1000") {
		t.Fatalf("got %v", err)
	}
	// A chain of MaxSteps compensatable steps is a small document, but
	// written out with every default its canonical form, which is stored
	// and parsed again at every start, is over the size limit: refused.
	b.Reset()
	b.WriteString("name: t\nversion: 1\nsteps:\n")
	for i := 0; i < MaxSteps; i++ {
		b.WriteString("- {name: s" + strconv.Itoa(i) + ", action: {queue: q}, compensation: {queue: q}}\n")
	}
	if b.Len() > MaxDefinitionBytes {
		t.Fatalf("the document itself is %d bytes", b.Len())
	}
	_, err = ParseDefinition([]byte(b.String()))
	var verr *ValidationError
	if !errors.As(err, &verr) || len(verr.Problems) != 1 || !strings.Contains(verr.Problems[0].Message, "the limit is "+strconv.Itoa(MaxDefinitionBytes)) {
		t.Fatalf("got %v, want the canonical form refused as over the limit", err)
	}
	// A chain of MaxSteps steps that stays under the limit is fine, parses
	// quickly, and its canonical form parses again.
	b.Reset()
	b.WriteString("name: t\nversion: 1\nsteps:\n- {name: s0, kind: pivot, action: {queue: q}}\n")
	for i := 1; i < MaxSteps; i++ {
		b.WriteString("- {name: s" + strconv.Itoa(i) + ", kind: retriable, action: {queue: q}}\n")
	}
	def, err := ParseDefinition([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseDefinition(def.Canonical()); err != nil {
		t.Fatalf("canonical form: %v", err)
	}
	if !def.ancestors[MaxSteps-1].has(0) {
		t.Fatal("last step of the chain does not descend from the first")
	}
}
