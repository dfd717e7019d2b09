package saga

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// A definition document, JSON or YAML, is first read into this small
// ordered tree. Both syntaxes then go through one decoder, which gives the
// same error messages (with field paths) for both, keeps object key order
// for input templates, rejects duplicate keys, and enforces the nesting
// limit before any recursion on the content.

type valueKind uint8

const (
	kindNull valueKind = iota
	kindBool
	kindNumber
	kindString
	kindArray
	kindObject
)

func (k valueKind) String() string {
	switch k {
	case kindNull:
		return "null"
	case kindBool:
		return "a boolean"
	case kindNumber:
		return "a number"
	case kindString:
		return "a string"
	case kindArray:
		return "a list"
	default:
		return "an object"
	}
}

type value struct {
	kind valueKind
	str  string // string value, or the number's normalized JSON text
	b    bool
	arr  []*value
	obj  []member
}

type member struct {
	key string
	val *value
}

func (v *value) field(key string) *value {
	for _, m := range v.obj {
		if m.key == key {
			return m.val
		}
	}
	return nil
}

// parseDocument reads a JSON document (when its first non-space byte is
// '{') or else a YAML document.
func parseDocument(data []byte) (*value, error) {
	trimmed := bytes.TrimLeft(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")), " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] == '{' {
		return parseJSON(trimmed)
	}
	return parseYAML(data)
}

// parseJSON reads exactly one JSON value.
func parseJSON(data []byte) (*value, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := readJSONValue(dec, 1)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("invalid JSON: unexpected data after the top-level value")
	}
	return v, nil
}

func readJSONValue(dec *json.Decoder, depth int) (*value, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, jsonSyntax(dec, err)
	}
	return jsonFromToken(dec, tok, depth)
}

func jsonFromToken(dec *json.Decoder, tok json.Token, depth int) (*value, error) {
	switch t := tok.(type) {
	case nil:
		return &value{kind: kindNull}, nil
	case bool:
		return &value{kind: kindBool, b: t}, nil
	case json.Number:
		n, err := normalizeNumber(string(t))
		if err != nil {
			return nil, err
		}
		return &value{kind: kindNumber, str: n}, nil
	case string:
		return &value{kind: kindString, str: t}, nil
	case json.Delim:
		if depth > MaxNestingDepth {
			return nil, fmt.Errorf("document nested deeper than %d levels", MaxNestingDepth)
		}
		switch t {
		case '[':
			v := &value{kind: kindArray}
			for dec.More() {
				e, err := readJSONValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				v.arr = append(v.arr, e)
			}
			if _, err := dec.Token(); err != nil {
				return nil, jsonSyntax(dec, err)
			}
			return v, nil
		case '{':
			v := &value{kind: kindObject}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, jsonSyntax(dec, err)
				}
				key, ok := kt.(string)
				if !ok {
					return nil, jsonSyntax(dec, errors.New("object key is not a string"))
				}
				if v.field(key) != nil {
					return nil, fmt.Errorf("invalid JSON: duplicate key %q", key)
				}
				e, err := readJSONValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				v.obj = append(v.obj, member{key: key, val: e})
			}
			if _, err := dec.Token(); err != nil {
				return nil, jsonSyntax(dec, err)
			}
			return v, nil
		}
	}
	return nil, jsonSyntax(dec, fmt.Errorf("unexpected token %v", tok))
}

func jsonSyntax(dec *json.Decoder, err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("invalid JSON at byte %d: %w", dec.InputOffset(), err)
}

// normalizeNumber gives one spelling to each number, so that 10.50 in JSON
// and 10.5 in YAML canonicalize alike: integers that fit in int64 in
// decimal, everything else as the shortest float64 form.
func normalizeNumber(s string) (string, error) {
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return strconv.FormatInt(i, 10), nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return "", fmt.Errorf("number %q is out of range", s)
	}
	if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return strconv.FormatInt(int64(f), 10), nil
	}
	return strconv.FormatFloat(f, 'g', -1, 64), nil
}

// parseYAML reads exactly one YAML document. Aliases, merge keys, custom
// tags and non-string keys are refused: a definition is plain data, and
// aliases are the classic way to blow a small document up in memory.
func parseYAML(data []byte) (*value, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, errors.New("empty document")
		}
		return nil, fmt.Errorf("invalid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		return nil, errors.New("invalid YAML: more than one document")
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, errors.New("empty document")
	}
	return yamlValue(doc.Content[0], 1)
}

func yamlValue(n *yaml.Node, depth int) (*value, error) {
	at := func(format string, args ...any) error {
		return fmt.Errorf("invalid YAML at line %d: %s", n.Line, fmt.Sprintf(format, args...))
	}
	switch n.Kind {
	case yaml.AliasNode:
		return nil, at("aliases are not supported")
	case yaml.SequenceNode, yaml.MappingNode:
		if depth > MaxNestingDepth {
			return nil, fmt.Errorf("document nested deeper than %d levels", MaxNestingDepth)
		}
		if n.Kind == yaml.SequenceNode {
			if n.ShortTag() != "!!seq" {
				return nil, at("tag %s is not supported", n.Tag)
			}
			v := &value{kind: kindArray}
			for _, c := range n.Content {
				e, err := yamlValue(c, depth+1)
				if err != nil {
					return nil, err
				}
				v.arr = append(v.arr, e)
			}
			return v, nil
		}
		if n.ShortTag() != "!!map" {
			return nil, at("tag %s is not supported", n.Tag)
		}
		v := &value{kind: kindObject}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
				if k.ShortTag() == "!!merge" {
					return nil, at("merge keys (<<) are not supported")
				}
				return nil, fmt.Errorf("invalid YAML at line %d: keys must be strings", k.Line)
			}
			if v.field(k.Value) != nil {
				return nil, fmt.Errorf("invalid YAML at line %d: duplicate key %q", k.Line, k.Value)
			}
			e, err := yamlValue(n.Content[i+1], depth+1)
			if err != nil {
				return nil, err
			}
			v.obj = append(v.obj, member{key: k.Value, val: e})
		}
		return v, nil
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str", "!!timestamp":
			return &value{kind: kindString, str: n.Value}, nil
		case "!!null":
			return &value{kind: kindNull}, nil
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				return nil, at("%v", err)
			}
			return &value{kind: kindBool, b: b}, nil
		case "!!int", "!!float":
			var x any
			if err := n.Decode(&x); err != nil {
				return nil, at("%v", err)
			}
			var text string
			switch x := x.(type) {
			case int:
				text = strconv.Itoa(x)
			case int64:
				text = strconv.FormatInt(x, 10)
			case uint64:
				text = strconv.FormatUint(x, 10)
			case float64:
				if math.IsInf(x, 0) || math.IsNaN(x) {
					return nil, at("number %s is not allowed", n.Value)
				}
				text = strconv.FormatFloat(x, 'g', -1, 64)
			default:
				return nil, at("unsupported number %q", n.Value)
			}
			s, err := normalizeNumber(text)
			if err != nil {
				return nil, at("%v", err)
			}
			return &value{kind: kindNumber, str: s}, nil
		default:
			return nil, at("tag %s is not supported", n.Tag)
		}
	}
	return nil, at("unsupported YAML node")
}

// appendJSON writes v as compact JSON, keeping object key order.
func appendJSON(b []byte, v *value) []byte {
	switch v.kind {
	case kindNull:
		return append(b, "null"...)
	case kindBool:
		return strconv.AppendBool(b, v.b)
	case kindNumber:
		return append(b, v.str...)
	case kindString:
		return appendJSONString(b, v.str)
	case kindArray:
		b = append(b, '[')
		for i, e := range v.arr {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSON(b, e)
		}
		return append(b, ']')
	default:
		b = append(b, '{')
		for i, m := range v.obj {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, m.key)
			b = append(b, ':')
			b = appendJSON(b, m.val)
		}
		return append(b, '}')
	}
}

// appendJSONString quotes s as JSON without the HTML escaping that
// json.Marshal adds: payloads reach participants, not browsers.
func appendJSONString(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}
