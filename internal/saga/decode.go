package saga

import (
	"fmt"
	"strconv"
	"time"
)

// ParseDefinition reads a definition written in JSON or YAML (a document
// whose first non-space character is '{' is JSON, anything else YAML; both
// follow schema/definition.schema.json), validates it completely, and fills
// in every default. On failure it returns a *ValidationError listing all the
// problems found, each with the path of the field concerned.
//
// The document, and its canonical form, may each be at most
// MaxDefinitionBytes long; the document may be nested at most
// MaxNestingDepth levels; unknown fields, duplicate keys, YAML aliases and
// custom tags are refused.
func ParseDefinition(data []byte) (*Definition, error) {
	var ps problems
	if len(data) > MaxDefinitionBytes {
		ps.add("", "document is %d bytes; the limit is %d", len(data), MaxDefinitionBytes)
		return nil, ps.err()
	}
	root, err := parseDocument(data)
	if err != nil {
		ps.add("", "%s", err.Error())
		return nil, ps.err()
	}
	raw := decodeDefinition(root, &ps)
	if raw == nil {
		return nil, ps.err()
	}
	def := resolve(raw, &ps)
	if !ps.empty() {
		return nil, ps.err()
	}
	if err := def.seal(); err != nil {
		return nil, fmt.Errorf("saga: encode canonical definition: %w", err)
	}
	if len(def.canonical) > MaxDefinitionBytes {
		// The canonical form is what is stored and parsed again at every
		// start; defaults written out can make it much larger than the
		// document sent. Refused here, a definition that registers can
		// always be loaded again.
		ps.add("", "the canonical form (every default written out) is %d bytes; the limit is %d", len(def.canonical), MaxDefinitionBytes)
		return nil, ps.err()
	}
	return def, nil
}

// rawDefinition is the document as written: pointers tell an absent field
// from a zero one, which matters for defaults (jitter: 0 is not jitter
// absent) and for the rules that forbid a field on some step kinds.
type rawDefinition struct {
	name, description string
	version           int
	timeout           Duration
	steps             []*rawStep
}

type rawStep struct {
	path            string
	name            string
	kind            StepKind
	action          *Target
	compensation    *Target // nil when absent or malformed
	compensationSet bool
	after           []string
	afterSet        bool
	input           *value
	retry           rawRetry
	compRetry       rawRetry
	attemptTimeout  *Duration
	stepTimeout     *Duration
}

type rawRetry struct {
	set                bool
	initialInterval    *Duration
	maxInterval        *Duration
	multiplier         *float64
	maxAttempts        *int
	jitter             *float64
	nonRetryableErrors []string
}

func joinPath(base, key string) string {
	if base == "" {
		return key
	}
	return base + "." + key
}

// decoder reads typed fields out of the tree, reporting type errors by path.
type decoder struct{ ps *problems }

// object checks that v is an object whose keys are all in known.
func (d decoder) object(v *value, path string, known ...string) bool {
	if v.kind != kindObject {
		d.ps.add(path, "must be an object, not %s", v.kind)
		return false
	}
	for _, m := range v.obj {
		ok := false
		for _, k := range known {
			if m.key == k {
				ok = true
				break
			}
		}
		if !ok {
			d.ps.add(joinPath(path, m.key), "unknown field")
		}
	}
	return true
}

func (d decoder) str(v *value, path string) (string, bool) {
	if v.kind != kindString {
		d.ps.add(path, "must be a string, not %s", v.kind)
		return "", false
	}
	return v.str, true
}

func (d decoder) integer(v *value, path string) (int, bool) {
	if v.kind != kindNumber {
		d.ps.add(path, "must be an integer, not %s", v.kind)
		return 0, false
	}
	i, err := strconv.ParseInt(v.str, 10, 32)
	if err != nil {
		d.ps.add(path, "must be an integer between %d and %d, not %s", -1<<31, 1<<31-1, v.str)
		return 0, false
	}
	return int(i), true
}

func (d decoder) number(v *value, path string) (float64, bool) {
	if v.kind != kindNumber {
		d.ps.add(path, "must be a number, not %s", v.kind)
		return 0, false
	}
	f, err := strconv.ParseFloat(v.str, 64)
	if err != nil {
		d.ps.add(path, "must be a number, not %s", v.str)
		return 0, false
	}
	return f, true
}

func (d decoder) duration(v *value, path string) (*Duration, bool) {
	s, ok := d.str(v, path)
	if !ok {
		return nil, false
	}
	t, err := time.ParseDuration(s)
	if err != nil {
		d.ps.add(path, "invalid duration %q (write it like \"1.5s\", \"250ms\" or \"2m\")", s)
		return nil, false
	}
	if t < 0 {
		d.ps.add(path, "must not be negative, not %s", s)
		return nil, false
	}
	if Duration(t) > maxDuration {
		d.ps.add(path, "must be at most %s, not %s", maxDuration, s)
		return nil, false
	}
	x := Duration(t)
	return &x, true
}

func (d decoder) strList(v *value, path string) ([]string, bool) {
	if v.kind != kindArray {
		d.ps.add(path, "must be a list, not %s", v.kind)
		return nil, false
	}
	out := make([]string, 0, len(v.arr))
	ok := true
	for i, e := range v.arr {
		s, good := d.str(e, fmt.Sprintf("%s[%d]", path, i))
		ok = ok && good
		out = append(out, s)
	}
	return out, ok
}

func decodeDefinition(root *value, ps *problems) *rawDefinition {
	d := decoder{ps}
	if !d.object(root, "", "name", "version", "description", "timeout", "steps") {
		return nil
	}
	raw := &rawDefinition{}
	if v := root.field("name"); v != nil {
		if n, ok := d.str(v, "name"); ok && n == "" {
			ps.add("name", "must not be empty")
		} else {
			raw.name = n
		}
	} else {
		ps.add("name", "is required")
	}
	if v := root.field("version"); v != nil {
		var ok bool
		if raw.version, ok = d.integer(v, "version"); ok && raw.version < 1 {
			ps.add("version", "must be at least 1")
		}
	} else {
		ps.add("version", "is required")
	}
	if v := root.field("description"); v != nil {
		raw.description, _ = d.str(v, "description")
	}
	if v := root.field("timeout"); v != nil {
		if t, ok := d.duration(v, "timeout"); ok {
			raw.timeout = *t
		}
	}
	steps := root.field("steps")
	switch {
	case steps == nil:
		ps.add("steps", "is required")
	case steps.kind != kindArray:
		ps.add("steps", "must be a list, not %s", steps.kind)
	case len(steps.arr) == 0:
		ps.add("steps", "must have at least one step")
	case len(steps.arr) > MaxSteps:
		ps.add("steps", "has %d steps; the limit is %d", len(steps.arr), MaxSteps)
	default:
		for i, sv := range steps.arr {
			raw.steps = append(raw.steps, decodeStep(d, sv, fmt.Sprintf("steps[%d]", i)))
		}
	}
	return raw
}

func decodeStep(d decoder, v *value, path string) *rawStep {
	s := &rawStep{path: path}
	if !d.object(v, path, "name", "kind", "action", "compensation", "after", "input",
		"retry", "compensation_retry", "attempt_timeout", "step_timeout") {
		return s
	}
	if f := v.field("name"); f != nil {
		if n, ok := d.str(f, path+".name"); ok && n == "" {
			d.ps.add(path+".name", "must not be empty")
		} else {
			s.name = n
		}
	} else {
		d.ps.add(path+".name", "is required")
	}
	s.kind = KindCompensatable
	if f := v.field("kind"); f != nil {
		if k, ok := d.str(f, path+".kind"); ok {
			switch StepKind(k) {
			case KindCompensatable, KindPivot, KindRetriable:
				s.kind = StepKind(k)
			default:
				d.ps.add(path+".kind", "must be compensatable, pivot or retriable, not %q", k)
			}
		}
	}
	if f := v.field("action"); f != nil {
		s.action = decodeTarget(d, f, path+".action")
	} else {
		d.ps.add(path+".action", "is required")
	}
	if f := v.field("compensation"); f != nil && f.kind != kindNull {
		s.compensation = decodeTarget(d, f, path+".compensation")
		s.compensationSet = true
	}
	if f := v.field("after"); f != nil {
		if f.kind == kindNull {
			d.ps.add(path+".after", "must be a list (write after: [] for a step that depends on nothing)")
		} else if l, ok := d.strList(f, path+".after"); ok {
			s.after, s.afterSet = l, true
		}
	}
	s.input = v.field("input")
	if f := v.field("retry"); f != nil {
		s.retry = decodeRetry(d, f, path+".retry")
	}
	if f := v.field("compensation_retry"); f != nil {
		s.compRetry = decodeRetry(d, f, path+".compensation_retry")
	}
	if f := v.field("attempt_timeout"); f != nil {
		s.attemptTimeout, _ = d.duration(f, path+".attempt_timeout")
	}
	if f := v.field("step_timeout"); f != nil {
		s.stepTimeout, _ = d.duration(f, path+".step_timeout")
	}
	return s
}

// decodeTarget returns nil when v is not an object (already reported).
func decodeTarget(d decoder, v *value, path string) *Target {
	t := &Target{}
	if !d.object(v, path, "queue", "http", "topic", "name") {
		return nil
	}
	if f := v.field("topic"); f != nil {
		t.Topic, _ = d.str(f, path+".topic")
	}
	if f := v.field("queue"); f != nil {
		t.Queue, _ = d.str(f, path+".queue")
	}
	if f := v.field("http"); f != nil {
		t.HTTP, _ = d.str(f, path+".http")
	}
	if f := v.field("name"); f != nil {
		t.Name, _ = d.str(f, path+".name")
	}
	return t
}

func decodeRetry(d decoder, v *value, path string) rawRetry {
	r := rawRetry{set: true}
	if !d.object(v, path, "initial_interval", "max_interval", "multiplier", "max_attempts", "jitter", "non_retryable_errors") {
		return r
	}
	if f := v.field("initial_interval"); f != nil {
		r.initialInterval, _ = d.duration(f, path+".initial_interval")
	}
	if f := v.field("max_interval"); f != nil {
		r.maxInterval, _ = d.duration(f, path+".max_interval")
	}
	if f := v.field("multiplier"); f != nil {
		if x, ok := d.number(f, path+".multiplier"); ok {
			r.multiplier = &x
		}
	}
	if f := v.field("max_attempts"); f != nil {
		if x, ok := d.integer(f, path+".max_attempts"); ok {
			r.maxAttempts = &x
		}
	}
	if f := v.field("jitter"); f != nil {
		if x, ok := d.number(f, path+".jitter"); ok {
			r.jitter = &x
		}
	}
	if f := v.field("non_retryable_errors"); f != nil {
		r.nonRetryableErrors, _ = d.strList(f, path+".non_retryable_errors")
	}
	return r
}
