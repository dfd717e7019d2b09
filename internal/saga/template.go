package saga

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Input templates. A step's input is any JSON value in which strings may
// reference data known at dispatch time:
//
//	${input.a.b}              the saga input, at path a.b
//	${steps.payment.output.id} an earlier step's output, at path id
//	${saga.id}                the saga id
//
// A string that is exactly one reference is replaced by the referenced JSON
// value, whatever its type. A reference inside a longer string is
// interpolated: strings are inserted as they are, null or missing values as
// nothing, other values as their compact JSON. "$${" writes a literal "${".
// Path segments are [A-Za-z0-9_-]+; a segment that is a number indexes a
// list. A path that leads nowhere gives null. Object keys are never
// templated.

type refRoot uint8

const (
	refInput refRoot = iota
	refSagaID
	refStep
)

type ref struct {
	root refRoot
	step string
	path []string
	text string // the reference as written, "${...}", for messages
}

type tmplPart struct {
	lit string
	ref *ref // nil for a literal part
}

type tmplNode struct {
	kind  valueKind
	lit   string     // JSON text of a non-string scalar
	parts []tmplPart // pieces of a string
	arr   []*tmplNode
	obj   []tmplMember
}

type tmplMember struct {
	key string
	val *tmplNode
}

type template struct {
	root *tmplNode
	refs []*ref
}

// templateProblem is a syntax error at a path inside the template.
type templateProblem struct {
	path string
	msg  string
}

// compileTemplate parses every string of v. Problems carry the path below
// the input field, such as ".items[0]".
func compileTemplate(v *value) (*template, []templateProblem) {
	t := &template{}
	var probs []templateProblem
	var walk func(v *value, path string) *tmplNode
	walk = func(v *value, path string) *tmplNode {
		n := &tmplNode{kind: v.kind}
		switch v.kind {
		case kindString:
			parts, err := parseTemplateString(v.str)
			if err != nil {
				probs = append(probs, templateProblem{path: path, msg: err.Error()})
			}
			n.parts = parts
			for _, p := range parts {
				if p.ref != nil {
					t.refs = append(t.refs, p.ref)
				}
			}
		case kindArray:
			for i, e := range v.arr {
				n.arr = append(n.arr, walk(e, fmt.Sprintf("%s[%d]", path, i)))
			}
		case kindObject:
			for _, m := range v.obj {
				n.obj = append(n.obj, tmplMember{key: m.key, val: walk(m.val, path+"."+m.key)})
			}
		default:
			n.lit = string(appendJSON(nil, v))
		}
		return n
	}
	t.root = walk(v, "")
	return t, probs
}

func parseTemplateString(s string) ([]tmplPart, error) {
	var parts []tmplPart
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			parts = append(parts, tmplPart{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "$${"):
			lit.WriteString("${")
			i += 3
		case strings.HasPrefix(s[i:], "${"):
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return nil, fmt.Errorf("unterminated reference %q (a reference ends with })", s[i:])
			}
			r, err := parseRef(s[i+2 : i+2+end])
			if err != nil {
				return nil, err
			}
			flush()
			parts = append(parts, tmplPart{ref: r})
			i += 2 + end + 1
		default:
			lit.WriteByte(s[i])
			i++
		}
	}
	flush()
	return parts, nil
}

func parseRef(expr string) (*ref, error) {
	text := "${" + expr + "}"
	segs := strings.Split(expr, ".")
	for _, s := range segs {
		if !isPathSegment(s) {
			return nil, fmt.Errorf("reference %s: path segments must be non-empty [A-Za-z0-9_-]", text)
		}
	}
	switch segs[0] {
	case "input":
		return &ref{root: refInput, path: segs[1:], text: text}, nil
	case "saga":
		if len(segs) == 2 && segs[1] == "id" {
			return &ref{root: refSagaID, text: text}, nil
		}
		return nil, fmt.Errorf("reference %s: the only saga field is ${saga.id}", text)
	case "steps":
		if len(segs) < 3 || segs[2] != "output" {
			return nil, fmt.Errorf("reference %s: step references have the form ${steps.NAME.output...}", text)
		}
		return &ref{root: refStep, step: segs[1], path: segs[3:], text: text}, nil
	}
	return nil, fmt.Errorf("reference %s: must start with input, steps or saga", text)
}

func isPathSegment(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// evalContext supplies the data references read. Raw values are compact
// JSON; nil means absent. With outputsUnknown, step references stand for
// outputs that do not exist yet: measure counts them at their smallest.
type evalContext struct {
	sagaID         string
	input          json.RawMessage
	output         func(step string) json.RawMessage
	outputsUnknown bool
}

// RenderLimitError says that a step's input would render larger than
// MaxRenderedBytes. It is ErrBadInput.
type RenderLimitError struct {
	Step  string
	Size  int // at least this many bytes; measuring stops past the limit
	Limit int
}

func (e *RenderLimitError) Error() string {
	return fmt.Sprintf("the input of step %q would render to more than %d bytes (at least %d)", e.Step, e.Limit, e.Size)
}

// Is makes errors.Is(err, ErrBadInput) true.
func (e *RenderLimitError) Is(target error) bool { return target == ErrBadInput }

// render evaluates the template into compact JSON, or fails without
// building it when the result would exceed limit bytes. Its measure runs
// first and allocates no more than the limit plus one referenced value, so
// a small template that repeats a large value cannot make it allocate
// more; the result is then built in a buffer of the measured size.
func (t *template) render(ctx evalContext, limit int) ([]byte, int, bool) {
	c := &refCache{}
	n, ok := measureNode(t.root, ctx, c, limit)
	if !ok {
		return nil, n, false
	}
	return renderNode(make([]byte, 0, n), t.root, ctx, c), n, true
}

// measure returns an upper bound of the rendered size, exact but for rare
// escapes, and false as soon as it passes limit.
func (t *template) measure(ctx evalContext, limit int) (int, bool) {
	return measureNode(t.root, ctx, &refCache{}, limit)
}

// refCache remembers resolved references within one render, so that a
// reference repeated many times is looked up once, and indexes a list or
// an object the second time a lookup walks into it, so that many
// references into one large value do not each scan it.
type refCache struct {
	m    map[*ref]json.RawMessage
	seen map[container]bool
	objs map[container]map[string]json.RawMessage
	arrs map[container][]json.RawMessage
}

// container identifies a list or an object by where it lies in memory:
// every value a render reads is a slice of the input or of an output.
type container struct {
	first *byte
	n     int
}

// index returns raw's index if it is worth one: the second time raw is
// walked into. Nil otherwise, and the caller scans.
func (c *refCache) index(raw []byte) (map[string]json.RawMessage, []json.RawMessage, bool) {
	k := container{&raw[0], len(raw)}
	if m, ok := c.objs[k]; ok {
		return m, nil, true
	}
	if a, ok := c.arrs[k]; ok {
		return nil, a, true
	}
	if !c.seen[k] {
		if c.seen == nil {
			c.seen = map[container]bool{}
		}
		c.seen[k] = true
		return nil, nil, false
	}
	if raw[0] == '{' {
		m := map[string]json.RawMessage{}
		eachMember(raw, func(key, val []byte) bool {
			m[decodeKey(key)] = val // the last of duplicate keys wins
			return true
		})
		if c.objs == nil {
			c.objs = map[container]map[string]json.RawMessage{}
		}
		c.objs[k] = m
		return m, nil, true
	}
	var a []json.RawMessage
	eachElement(raw, func(val []byte) bool {
		a = append(a, val)
		return true
	})
	if c.arrs == nil {
		c.arrs = map[container][]json.RawMessage{}
	}
	c.arrs[k] = a
	return nil, a, true
}

func (c *refCache) resolve(r *ref, ctx evalContext) (json.RawMessage, bool) {
	if r.root == refStep && ctx.outputsUnknown {
		return nil, false
	}
	if v, ok := c.m[r]; ok {
		return v, true
	}
	v := resolveRef(r, ctx, c)
	if c.m == nil {
		c.m = map[*ref]json.RawMessage{}
	}
	c.m[r] = v
	return v, true
}

func measureNode(n *tmplNode, ctx evalContext, c *refCache, limit int) (int, bool) {
	size := 0
	add := func(k int) bool {
		size += k
		return size <= limit
	}
	switch n.kind {
	case kindString:
		if len(n.parts) == 1 && n.parts[0].ref != nil {
			v, known := c.resolve(n.parts[0].ref, ctx)
			k := len(v)
			if !known {
				k = 1 // the smallest JSON value
			}
			ok := add(k)
			return size, ok
		}
		if !add(2) {
			return size, false
		}
		for _, p := range n.parts {
			k := escapedLen(p.lit)
			if p.ref != nil {
				v, known := c.resolve(p.ref, ctx)
				if !known {
					continue
				}
				k = interpolatedLen(v)
			}
			if !add(k) {
				return size, false
			}
		}
	case kindArray:
		if !add(2 + max(len(n.arr)-1, 0)) {
			return size, false
		}
		for _, e := range n.arr {
			k, ok := measureNode(e, ctx, c, limit-size)
			if !add(k) || !ok {
				return size, false
			}
		}
	case kindObject:
		if !add(2 + max(len(n.obj)-1, 0)) {
			return size, false
		}
		for _, m := range n.obj {
			if !add(escapedLen(m.key) + 3) {
				return size, false
			}
			k, ok := measureNode(m.val, ctx, c, limit-size)
			if !add(k) || !ok {
				return size, false
			}
		}
	default:
		ok := add(len(n.lit))
		return size, ok
	}
	return size, true
}

func renderNode(b []byte, n *tmplNode, ctx evalContext, c *refCache) []byte {
	switch n.kind {
	case kindString:
		if len(n.parts) == 1 && n.parts[0].ref != nil {
			v, _ := c.resolve(n.parts[0].ref, ctx)
			return append(b, v...)
		}
		var s strings.Builder
		for _, p := range n.parts {
			if p.ref == nil {
				s.WriteString(p.lit)
				continue
			}
			v, _ := c.resolve(p.ref, ctx)
			s.WriteString(interpolate(v))
		}
		return appendJSONString(b, s.String())
	case kindArray:
		b = append(b, '[')
		for i, e := range n.arr {
			if i > 0 {
				b = append(b, ',')
			}
			b = renderNode(b, e, ctx, c)
		}
		return append(b, ']')
	case kindObject:
		b = append(b, '{')
		for i, m := range n.obj {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, m.key)
			b = append(b, ':')
			b = renderNode(b, m.val, ctx, c)
		}
		return append(b, '}')
	default:
		return append(b, n.lit...)
	}
}

// escapedLen bounds the length of s encoded as the inside of a JSON string
// by appendJSONString: short escapes count two bytes, the rest of the
// control characters, U+2028, U+2029 and invalid UTF-8 six.
func escapedLen(s string) int {
	n := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			switch {
			case b == '"' || b == '\\' || b == '\n' || b == '\r' || b == '\t':
				n += 2
			case b < 0x20:
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			n += 6
		} else {
			n += size
		}
		i += size
	}
	return n
}

// interpolatedLen bounds the encoded length of interpolate(raw) without
// building it for values other than strings.
func interpolatedLen(raw json.RawMessage) int {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0
	}
	if raw[0] == '"' {
		return escapedLen(interpolate(raw))
	}
	n := 0
	for _, b := range raw {
		// Compact JSON outside strings is ASCII; inside them, what needs
		// escaping again is a quote, a backslash, or a byte of a rune
		// that escapedLen would count at most six for.
		switch {
		case b == '"' || b == '\\':
			n += 2
		case b >= utf8.RuneSelf:
			n += 6
		default:
			n++
		}
	}
	return n
}

var jsonNull = json.RawMessage("null")

// resolveRef returns the referenced value as compact JSON, null if absent.
func resolveRef(r *ref, ctx evalContext, c *refCache) json.RawMessage {
	var v json.RawMessage
	switch r.root {
	case refSagaID:
		return appendJSONString(nil, ctx.sagaID)
	case refInput:
		v = c.lookup(ctx.input, r.path)
	case refStep:
		if ctx.output != nil {
			v = c.lookup(ctx.output(r.step), r.path)
		}
	}
	if len(v) == 0 {
		return jsonNull
	}
	return v
}

// lookup walks path into raw, which must be valid JSON. It scans rather
// than decodes, so the value comes back as a slice of raw, byte for byte;
// lists and objects walked into more than once are indexed (see index).
func (c *refCache) lookup(raw json.RawMessage, path []string) json.RawMessage {
	for _, seg := range path {
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 || raw[0] != '{' && raw[0] != '[' {
			return nil
		}
		i, err := strconv.Atoi(seg)
		if raw[0] == '[' && (err != nil || i < 0) {
			return nil
		}
		obj, arr, indexed := c.index(raw)
		switch {
		case indexed && raw[0] == '{':
			raw = obj[seg]
		case indexed:
			raw = nil
			if i < len(arr) {
				raw = arr[i]
			}
		case raw[0] == '{':
			raw = objectMember(raw, seg)
		default:
			raw = arrayElement(raw, i)
		}
	}
	return raw
}

// objectMember returns the value of key in the JSON object obj; nil if
// absent. With duplicate keys the last wins, as with encoding/json.
func objectMember(obj []byte, key string) []byte {
	var found []byte
	eachMember(obj, func(k, v []byte) bool {
		if keyEquals(k, key) {
			found = v
		}
		return true
	})
	return found
}

// arrayElement returns element n of the JSON array arr; nil if absent.
func arrayElement(arr []byte, n int) []byte {
	var found []byte
	k := 0
	eachElement(arr, func(v []byte) bool {
		if k == n {
			found = v
			return false
		}
		k++
		return true
	})
	return found
}

// eachMember calls f with each key token and value of the JSON object obj
// until f returns false.
func eachMember(obj []byte, f func(key, val []byte) bool) {
	i := skipSpace(obj, 1)
	for i < len(obj) && obj[i] == '"' {
		kEnd := skipValue(obj, i)
		k := obj[i:kEnd]
		i = skipSpace(obj, kEnd)
		if i >= len(obj) || obj[i] != ':' {
			return
		}
		vStart := skipSpace(obj, i+1)
		vEnd := skipValue(obj, vStart)
		if !f(k, obj[vStart:vEnd]) {
			return
		}
		i = skipSpace(obj, vEnd)
		if i < len(obj) && obj[i] == ',' {
			i = skipSpace(obj, i+1)
		}
	}
}

// eachElement calls f with each element of the JSON array arr until f
// returns false.
func eachElement(arr []byte, f func(val []byte) bool) {
	i := skipSpace(arr, 1)
	for i < len(arr) && arr[i] != ']' {
		end := skipValue(arr, i)
		if !f(arr[i:end]) {
			return
		}
		i = skipSpace(arr, end)
		if i < len(arr) && arr[i] == ',' {
			i = skipSpace(arr, i+1)
		}
	}
}

// decodeKey returns a JSON string token's text.
func decodeKey(tok []byte) string {
	if bytes.IndexByte(tok, '\\') < 0 {
		return string(tok[1 : len(tok)-1])
	}
	var s string
	_ = json.Unmarshal(tok, &s) // a key of valid JSON
	return s
}

// keyEquals compares a JSON string token with key; only a token with
// escapes is decoded.
func keyEquals(tok []byte, key string) bool {
	if bytes.IndexByte(tok, '\\') < 0 {
		return len(tok) == len(key)+2 && string(tok[1:len(tok)-1]) == key
	}
	var s string
	return json.Unmarshal(tok, &s) == nil && s == key
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the index just past the JSON value that starts at i.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		for i++; i < len(b); i++ {
			switch b[i] {
			case '\\':
				i++
			case '"':
				return i + 1
			}
		}
		return i
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipValue(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return i
	default:
		for ; i < len(b); i++ {
			switch b[i] {
			case ',', ']', '}', ' ', '\t', '\n', '\r':
				return i
			}
		}
		return i
	}
}

// interpolate turns a JSON value into the text inserted into a string.
func interpolate(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	}
	return string(raw)
}
