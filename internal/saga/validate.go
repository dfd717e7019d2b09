package saga

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// resolve checks everything that decoding could not (names, references,
// the dependency graph, kind rules, ranges) and builds the Definition with
// all defaults filled in. Problems go to ps; the returned Definition is only
// meaningful when ps stays empty.
func resolve(raw *rawDefinition, ps *problems) *Definition {
	def := &Definition{
		Name:        raw.name,
		Version:     raw.version,
		Description: raw.description,
		Timeout:     raw.timeout,
		index:       make(map[string]int, len(raw.steps)),
		pivot:       -1,
	}
	if raw.name != "" {
		checkName(ps, "name", raw.name, true)
	}
	if len(raw.description) > maxDescription {
		ps.add("description", "is %d bytes; the limit is %d", len(raw.description), maxDescription)
	}

	// Names first: after and input refer to steps by name.
	for i, rs := range raw.steps {
		if rs.name == "" {
			continue
		}
		if !checkName(ps, rs.path+".name", rs.name, false) {
			continue
		}
		if j, dup := def.index[rs.name]; dup {
			ps.add(rs.path+".name", "duplicate step name %q (also steps[%d])", rs.name, j)
			continue
		}
		def.index[rs.name] = i
	}

	graphOK := true
	def.Steps = make([]StepDef, len(raw.steps))
	def.deps = make([][]int, len(raw.steps))
	for i, rs := range raw.steps {
		st := &def.Steps[i]
		st.Name = rs.name
		st.Kind = rs.kind
		switch {
		case rs.afterSet:
			st.After = rs.after
		case i > 0:
			st.After = []string{raw.steps[i-1].name}
		default:
			st.After = []string{}
		}
		if !resolveDeps(def, i, rs, ps) {
			graphOK = false
		}
		resolveStep(st, rs, ps)
		if rs.kind == KindPivot {
			if def.pivot >= 0 {
				ps.add(rs.path+".kind", "only one pivot step is allowed; steps[%d] %q is already the pivot", def.pivot, def.Steps[def.pivot].Name)
			} else {
				def.pivot = i
			}
		}
	}
	if len(raw.steps) == 0 {
		return def
	}
	if graphOK {
		if cyc := findCycle(def); cyc != nil {
			names := make([]string, len(cyc))
			for k, idx := range cyc {
				names[k] = fmt.Sprintf("%q", def.Steps[idx].Name)
			}
			ps.add(raw.steps[cyc[0]].path+".after", "dependency cycle: %s (each step is after the next)", strings.Join(names, " → "))
			graphOK = false
		}
	}
	if graphOK {
		computeAncestors(def)
		checkKinds(def, raw, ps)
	}
	def.templates = make([]*template, len(raw.steps))
	for i, rs := range raw.steps {
		if rs.input == nil {
			continue
		}
		def.Steps[i].Input = appendJSON(nil, rs.input)
		t, tps := compileTemplate(rs.input)
		for _, p := range tps {
			ps.add(rs.path+".input"+p.path, "%s", p.msg)
		}
		def.templates[i] = t
		for _, r := range t.refs {
			if r.root != refStep {
				continue
			}
			j, ok := def.index[r.step]
			switch {
			case !ok:
				ps.add(rs.path+".input", "%s names unknown step %q", r.text, r.step)
			case j == i:
				ps.add(rs.path+".input", "%s refers to the step's own output, which does not exist yet at dispatch", r.text)
			case graphOK && !def.ancestors[i].has(j):
				ps.add(rs.path+".input", "%s reads step %q, which does not run before %q (add it to after, directly or through another step)", r.text, r.step, rs.name)
			}
		}
	}
	return def
}

// checkName reports whether name is well formed: step names are
// [a-z0-9_-]; the definition name may also contain dots.
func checkName(ps *problems, path, name string, dots bool) bool {
	if len(name) > MaxNameLength {
		ps.add(path, "is %d bytes; the limit is %d", len(name), MaxNameLength)
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || dots && c == '.' {
			continue
		}
		if dots {
			ps.add(path, "%q may only contain a-z, 0-9, '_', '-' and '.'", name)
		} else {
			ps.add(path, "%q may only contain a-z, 0-9, '_' and '-'", name)
		}
		return false
	}
	return true
}

// checkToken checks queue and operation names: [A-Za-z0-9_.:-], at most
// MaxNameLength bytes.
func checkToken(ps *problems, path, s string) {
	if s == "" {
		ps.add(path, "must not be empty")
		return
	}
	if len(s) > MaxNameLength {
		ps.add(path, "is %d bytes; the limit is %d", len(s), MaxNameLength)
		return
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == ':') {
			ps.add(path, "%q may only contain letters, digits, '_', '-', '.' and ':'", s)
			return
		}
	}
}

func resolveDeps(def *Definition, i int, rs *rawStep, ps *problems) bool {
	ok := true
	st := &def.Steps[i]
	for k, name := range st.After {
		p := fmt.Sprintf("%s.after[%d]", rs.path, k)
		if !rs.afterSet {
			p = rs.path // the implicit dependency on the previous step
		}
		j, found := def.index[name]
		switch {
		case name == "":
			ok = false // the unnamed step is reported at its own name
			if rs.afterSet {
				ps.add(p, "must not be empty")
			}
		case !found:
			if rs.afterSet { // else the previous step's bad name is reported already
				ps.add(p, "unknown step %q", name)
			}
			ok = false
		case j == i:
			ps.add(p, "step %q cannot be after itself", name)
			ok = false
		default:
			dup := false
			for _, d := range def.deps[i] {
				dup = dup || d == j
			}
			if dup {
				ps.add(p, "step %q is listed twice", name)
				continue
			}
			def.deps[i] = append(def.deps[i], j)
		}
	}
	return ok
}

func resolveStep(st *StepDef, rs *rawStep, ps *problems) {
	if rs.action != nil {
		st.Action = *rs.action
		resolveTarget(&st.Action, rs.path+".action", rs.name, ps)
	}
	switch rs.kind {
	case KindCompensatable:
		if !rs.compensationSet {
			ps.add(rs.path+".compensation", "is required for a compensatable step (or set kind to pivot or retriable)")
		}
	case KindPivot:
		if rs.compensationSet {
			ps.add(rs.path+".compensation", "is not allowed on a pivot step: the pivot is never compensated")
		}
		if rs.stepTimeout != nil {
			ps.add(rs.path+".step_timeout", "is not allowed on a pivot step: the pivot's outcome must be known, so it is retried until it answers")
		}
	case KindRetriable:
		if rs.compensationSet {
			ps.add(rs.path+".compensation", "is not allowed on a retriable step: retriable steps run after the pivot and are never compensated")
		}
		if rs.stepTimeout != nil {
			ps.add(rs.path+".step_timeout", "is not allowed on a retriable step: it is retried until it succeeds")
		}
	}
	if rs.compensation != nil && rs.kind == KindCompensatable {
		c := *rs.compensation
		st.Compensation = &c
		resolveTarget(st.Compensation, rs.path+".compensation", "compensate_"+rs.name, ps)
	}
	st.Retry = resolveRetry(rs.retry, rs.path+".retry", rs.kind == KindRetriable, false, ps)
	if st.Compensation != nil {
		st.CompensationRetry = resolveRetry(rs.compRetry, rs.path+".compensation_retry", false, true, ps)
	} else if rs.compRetry.set && !rs.compensationSet {
		ps.add(rs.path+".compensation_retry", "is set but the step has no compensation")
	}
	st.AttemptTimeout = DefaultAttemptTimeout
	if rs.attemptTimeout != nil {
		st.AttemptTimeout = *rs.attemptTimeout
	}
	if rs.stepTimeout != nil {
		st.StepTimeout = *rs.stepTimeout
	}
}

func resolveTarget(t *Target, path, defaultName string, ps *problems) {
	n := 0
	for _, v := range []string{t.Queue, t.HTTP, t.Topic} {
		if v != "" {
			n++
		}
	}
	switch {
	case n != 1:
		ps.add(path, "needs exactly one of queue, http or topic")
	case t.Queue != "":
		checkToken(ps, path+".queue", t.Queue)
	case t.Topic != "":
		checkToken(ps, path+".topic", t.Topic)
	default:
		checkURL(ps, path+".http", t.HTTP)
	}
	if t.Name == "" {
		t.Name = defaultName
	} else {
		checkToken(ps, path+".name", t.Name)
	}
}

func checkURL(ps *problems, path, s string) {
	if len(s) > maxURLLength {
		ps.add(path, "is %d bytes; the limit is %d", len(s), maxURLLength)
		return
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		ps.add(path, "%q must be an absolute http:// or https:// URL", s)
		return
	}
	if u.User != nil {
		ps.add(path, "must not carry credentials in the URL")
	}
}

func resolveRetry(r rawRetry, path string, retriable, compensation bool, ps *problems) RetryPolicy {
	p := RetryPolicy{
		InitialInterval: DefaultInitialInterval,
		MaxInterval:     DefaultMaxInterval,
		Multiplier:      DefaultMultiplier,
		MaxAttempts:     DefaultMaxAttempts,
		Jitter:          DefaultJitter,
	}
	if compensation {
		p.InitialInterval = DefaultCompensationInitialInterval
		p.MaxInterval = DefaultCompensationMaxInterval
		p.MaxAttempts = DefaultCompensationMaxAttempts
	}
	if retriable {
		p.MaxAttempts = 0
	}
	if r.initialInterval != nil {
		p.InitialInterval = *r.initialInterval
		if p.InitialInterval < Duration(time.Millisecond) {
			ps.add(path+".initial_interval", "must be at least 1ms, not %s", p.InitialInterval)
		}
	}
	if r.maxInterval != nil {
		p.MaxInterval = *r.maxInterval
		if p.MaxInterval < p.InitialInterval {
			ps.add(path+".max_interval", "(%s) must be at least initial_interval (%s)", p.MaxInterval, p.InitialInterval)
		}
	} else if p.MaxInterval < p.InitialInterval {
		p.MaxInterval = p.InitialInterval // a long initial interval lifts the default cap
	}
	if r.multiplier != nil {
		p.Multiplier = *r.multiplier
		if p.Multiplier < 1 || p.Multiplier > maxMultiplier {
			ps.add(path+".multiplier", "must be between 1 and %d, not %v", maxMultiplier, p.Multiplier)
		}
	}
	if r.maxAttempts != nil {
		n := *r.maxAttempts
		switch {
		case retriable && n != 0:
			ps.add(path+".max_attempts", "is not allowed on a retriable step: it is retried until it succeeds")
		case !retriable && (n < 1 || n > maxMaxAttempts):
			ps.add(path+".max_attempts", "must be between 1 and %d, not %d", maxMaxAttempts, n)
		default:
			p.MaxAttempts = n
		}
	}
	if r.jitter != nil {
		p.Jitter = *r.jitter
		if p.Jitter < 0 || p.Jitter > 1 {
			ps.add(path+".jitter", "must be between 0 and 1, not %v", p.Jitter)
		}
	}
	if r.nonRetryableErrors != nil {
		if retriable && len(r.nonRetryableErrors) > 0 {
			ps.add(path+".non_retryable_errors", "is not allowed on a retriable step: it is retried until it succeeds")
		}
		if len(r.nonRetryableErrors) > maxErrorCodes {
			ps.add(path+".non_retryable_errors", "has %d codes; the limit is %d", len(r.nonRetryableErrors), maxErrorCodes)
		}
		for i, c := range r.nonRetryableErrors {
			if c == "" || len(c) > MaxNameLength {
				ps.add(fmt.Sprintf("%s.non_retryable_errors[%d]", path, i), "must be 1 to %d bytes long", MaxNameLength)
			}
		}
		if len(r.nonRetryableErrors) > 0 {
			p.NonRetryableErrors = r.nonRetryableErrors
		}
	}
	return p
}

// findCycle returns one dependency cycle as step indexes, starting and
// ending at the same step, or nil. The search runs in step order, so the
// cycle reported for a given document is always the same.
func findCycle(def *Definition) []int {
	const (
		white = iota
		grey
		black
	)
	color := make([]uint8, len(def.Steps))
	var stack []int
	var cycle []int
	var visit func(i int) bool
	visit = func(i int) bool {
		color[i] = grey
		stack = append(stack, i)
		for _, d := range def.deps[i] {
			switch color[d] {
			case grey:
				for k := len(stack) - 1; k >= 0; k-- {
					if stack[k] == d {
						cycle = append(append([]int(nil), stack[k:]...), d)
						return true
					}
				}
			case white:
				if visit(d) {
					return true
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[i] = black
		return false
	}
	for i := range def.Steps {
		if color[i] == white && visit(i) {
			return cycle
		}
	}
	return nil
}

// computeAncestors fills def.ancestors. The graph is acyclic here.
func computeAncestors(def *Definition) {
	n := len(def.Steps)
	def.ancestors = make([]bitset, n)
	done := make([]bool, n)
	var visit func(i int)
	visit = func(i int) {
		if done[i] {
			return
		}
		a := newBitset(n)
		for _, d := range def.deps[i] {
			visit(d)
			a.set(d)
			a.union(def.ancestors[d])
		}
		def.ancestors[i] = a
		done[i] = true
	}
	for i := range def.Steps {
		visit(i)
	}
}

// checkKinds enforces where each kind may sit relative to the pivot.
func checkKinds(def *Definition, raw *rawDefinition, ps *problems) {
	p := def.pivot
	for i, st := range def.Steps {
		path := raw.steps[i].path + ".kind"
		switch {
		case p < 0 && st.Kind == KindRetriable:
			ps.add(path, "retriable step %q needs a pivot step to come after: retriable steps only run once the saga cannot be undone", st.Name)
		case p >= 0 && i != p && st.Kind == KindCompensatable && !def.ancestors[p].has(i):
			ps.add(path, "compensatable step %q must run before the pivot %q (make the pivot after it, directly or through another step): nothing can be undone once the pivot succeeded", st.Name, def.Steps[p].Name)
		case p >= 0 && st.Kind == KindRetriable && !def.ancestors[i].has(p):
			ps.add(path, "retriable step %q must run after the pivot %q (make it after the pivot, directly or through another step)", st.Name, def.Steps[p].Name)
		}
	}
}
