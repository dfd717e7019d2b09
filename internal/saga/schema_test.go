package saga

import (
	"encoding/json"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type jsonSchema struct {
	Required   []string               `json:"required"`
	Properties map[string]*jsonSchema `json:"properties"`
	Defs       map[string]*jsonSchema `json:"$defs"`
	Ref        string                 `json:"$ref"`
	Items      *jsonSchema            `json:"items"`
	Default    any                    `json:"default"`
	Schema     string                 `json:"$schema"`
	AddProps   *bool                  `json:"additionalProperties"`
}

func loadSchema(t *testing.T) *jsonSchema {
	t.Helper()
	b, err := os.ReadFile("../../schema/definition.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var s jsonSchema
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

// jsonFields lists the JSON names of a struct's serialized fields.
func jsonFields(typ reflect.Type) []string {
	var out []string
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

func keys(m map[string]*jsonSchema) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// The published schema describes exactly the fields the Go types read and
// write: a field added on one side only fails here.
func TestSchemaMatchesGoTypes(t *testing.T) {
	s := loadSchema(t)
	if s.Schema != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$schema = %q, want draft 2020-12", s.Schema)
	}
	objects := map[string]struct {
		schema *jsonSchema
		typ    reflect.Type
	}{
		"definition": {s, reflect.TypeFor[Definition]()},
		"step":       {s.Defs["step"], reflect.TypeFor[StepDef]()},
		"target":     {s.Defs["target"], reflect.TypeFor[Target]()},
		"retry":      {s.Defs["retry"], reflect.TypeFor[RetryPolicy]()},
	}
	for name, o := range objects {
		if o.schema == nil {
			t.Errorf("schema has no %s object", name)
			continue
		}
		if diff := cmp.Diff(jsonFields(o.typ), keys(o.schema.Properties)); diff != "" {
			t.Errorf("%s: Go fields (-) vs schema properties (+):\n%s", name, diff)
		}
		if o.schema.AddProps == nil || *o.schema.AddProps {
			t.Errorf("%s: additionalProperties must be false (unknown fields are rejected)", name)
		}
	}
	if diff := cmp.Diff([]string{"name", "version", "steps"}, s.Required); diff != "" {
		t.Errorf("required (-want +got):\n%s", diff)
	}
	if got := s.Defs["step"].Properties["attempt_timeout"].Default; got != DefaultAttemptTimeout.String() {
		t.Errorf("schema attempt_timeout default %v, want %s", got, DefaultAttemptTimeout)
	}
}

// Every key of a canonical definition is a property the schema declares
// at that place.
func TestSchemaCoversCanonical(t *testing.T) {
	s := loadSchema(t)
	doc, err := os.ReadFile("testdata/order.yaml")
	if err != nil {
		t.Fatal(err)
	}
	def, err := ParseDefinition(doc)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(def.Canonical(), &v); err != nil {
		t.Fatal(err)
	}
	deref := func(n *jsonSchema) *jsonSchema {
		for n != nil && n.Ref != "" {
			n = s.Defs[strings.TrimPrefix(n.Ref, "#/$defs/")]
		}
		return n
	}
	var walk func(v any, n *jsonSchema, path string)
	walk = func(v any, n *jsonSchema, path string) {
		n = deref(n)
		switch v := v.(type) {
		case map[string]any:
			if n.Properties == nil {
				return // free-form, such as input
			}
			for k, e := range v {
				p, ok := n.Properties[k]
				if !ok {
					t.Errorf("%s.%s: not in the schema", path, k)
					continue
				}
				walk(e, p, path+"."+k)
			}
		case []any:
			if n.Items == nil {
				return
			}
			for _, e := range v {
				walk(e, n.Items, path+"[]")
			}
		}
	}
	walk(v, s, "")
}
