package saga

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
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
// JSON; nil means absent.
type evalContext struct {
	sagaID string
	input  json.RawMessage
	output func(step string) json.RawMessage
}

// render evaluates the template into compact JSON.
func (t *template) render(ctx evalContext) []byte {
	return renderNode(nil, t.root, ctx)
}

func renderNode(b []byte, n *tmplNode, ctx evalContext) []byte {
	switch n.kind {
	case kindString:
		if len(n.parts) == 1 && n.parts[0].ref != nil {
			return append(b, resolveRef(n.parts[0].ref, ctx)...)
		}
		var s strings.Builder
		for _, p := range n.parts {
			if p.ref == nil {
				s.WriteString(p.lit)
				continue
			}
			s.WriteString(interpolate(resolveRef(p.ref, ctx)))
		}
		return appendJSONString(b, s.String())
	case kindArray:
		b = append(b, '[')
		for i, e := range n.arr {
			if i > 0 {
				b = append(b, ',')
			}
			b = renderNode(b, e, ctx)
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
			b = renderNode(b, m.val, ctx)
		}
		return append(b, '}')
	default:
		return append(b, n.lit...)
	}
}

var jsonNull = json.RawMessage("null")

// resolveRef returns the referenced value as compact JSON, null if absent.
func resolveRef(r *ref, ctx evalContext) json.RawMessage {
	var v json.RawMessage
	switch r.root {
	case refSagaID:
		return appendJSONString(nil, ctx.sagaID)
	case refInput:
		v = lookup(ctx.input, r.path)
	case refStep:
		if ctx.output != nil {
			v = lookup(ctx.output(r.step), r.path)
		}
	}
	if len(v) == 0 {
		return jsonNull
	}
	return v
}

// lookup walks path into raw. Each level is decoded only as far as needed;
// values come back byte for byte as they were in raw.
func lookup(raw json.RawMessage, path []string) json.RawMessage {
	for _, seg := range path {
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 {
			return nil
		}
		switch raw[0] {
		case '{':
			var m map[string]json.RawMessage
			if json.Unmarshal(raw, &m) != nil {
				return nil
			}
			raw = m[seg]
		case '[':
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 {
				return nil
			}
			var a []json.RawMessage
			if json.Unmarshal(raw, &a) != nil || i >= len(a) {
				return nil
			}
			raw = a[i]
		default:
			return nil
		}
	}
	return raw
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
