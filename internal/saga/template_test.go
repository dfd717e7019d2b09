package saga

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestTemplateRender(t *testing.T) {
	input := json.RawMessage(`{"total":12.5,"items":[{"sku":"a-1","qty":2}],"address":{"city":"Lyon"},"note":null,"name":"Ann",` +
		`"tricky":{"ab":"]}\"{[","list":["[",{"y":"}"},{"x":3}],"dup":1,"dup":2,"esc\u0061ped":true}}`)
	outputs := map[string]json.RawMessage{
		"order": json.RawMessage(`{"id":"o-7","lines":[1,2]}`),
	}
	ctx := evalContext{
		sagaID: "s-1",
		input:  input,
		output: func(step string) json.RawMessage { return outputs[step] },
	}
	tests := []struct {
		template string
		want     string
	}{
		{`"${input.total}"`, `12.5`},
		{`"${input.items}"`, `[{"sku":"a-1","qty":2}]`},
		{`"${input.items.0.sku}"`, `"a-1"`},
		{`"${input.items.1.sku}"`, `null`},
		{`"${input.items.x}"`, `null`},
		{`"${input.address}"`, `{"city":"Lyon"}`},
		{`"${input.missing.deeper}"`, `null`},
		{`"${input.total.deeper}"`, `null`},
		{`"${input}"`, string(input)},
		{`"${saga.id}"`, `"s-1"`},
		{`"${steps.order.output.id}"`, `"o-7"`},
		{`"${steps.order.output}"`, `{"id":"o-7","lines":[1,2]}`},
		{`"${steps.other.output.id}"`, `null`},
		{`"order ${steps.order.output.id} for ${input.name}"`, `"order o-7 for Ann"`},
		{`"total=${input.total} lines=${steps.order.output.lines} note=${input.note}|${input.nope}"`, `"total=12.5 lines=[1,2] note=|"`},
		{`"literal $${input.total} and $ alone"`, `"literal ${input.total} and $ alone"`},
		{`"<${input.address.city}> & co"`, `"<Lyon> & co"`},
		{`{"b":1,"a":["${saga.id}",true,null,{"k":"${input.items.0.qty}"}]}`, `{"b":1,"a":["s-1",true,null,{"k":2}]}`},
		{`"${input.tricky.ab}"`, `"]}\"{["`},
		{`"${input.tricky.list.2.x}"`, `3`},
		{`"${input.tricky.dup}"`, `2`},
		{`"q=${input.tricky.ab} ${input.tricky.list} \u2028"`, `"q=]}\"{[ [\"[\",{\"y\":\"}\"},{\"x\":3}] \u2028"`},
		{`"${input.tricky.escaped}"`, `true`},
		{`"${input.name}${input.name}"`, `"AnnAnn"`},
		{`"no refs"`, `"no refs"`},
	}
	for _, tt := range tests {
		v, err := parseJSON([]byte(tt.template))
		if err != nil {
			t.Fatalf("%s: %v", tt.template, err)
		}
		tmpl, probs := compileTemplate(v)
		if len(probs) > 0 {
			t.Fatalf("%s: %v", tt.template, probs)
		}
		b, n, ok := tmpl.render(ctx, MaxRenderedBytes)
		if got := string(b); !ok || got != tt.want {
			t.Errorf("%s\n got %s (%v)\nwant %s", tt.template, got, ok, tt.want)
		}
		if n < len(b) {
			t.Errorf("%s: measured %d bytes, rendered %d", tt.template, n, len(b))
		}
		if _, _, ok := tmpl.render(ctx, len(b)-1); ok {
			t.Errorf("%s: rendered past a limit of %d bytes", tt.template, len(b)-1)
		}
	}
}

func TestTemplateRenderWithoutData(t *testing.T) {
	v, _ := parseJSON([]byte(`{"a":"${input.x}","b":"${steps.s.output.y}"}`))
	tmpl, _ := compileTemplate(v)
	if got, _, _ := tmpl.render(evalContext{}, MaxRenderedBytes); string(got) != `{"a":null,"b":null}` {
		t.Fatalf("got %s", got)
	}
}

// TestTemplateLookupIndexed: references that walk into one value many
// times read it through an index; they must find what a decoder finds.
func TestTemplateLookupIndexed(t *testing.T) {
	input := json.RawMessage(`{"a":{"x":1,"y":[10,{"z":"deep"},30],"x":2},"b\u0031":"esc","list":[[0,1],[2,3]]}`)
	var refs []string
	want := map[string]string{
		"a.x": `2`, "a.y.1.z": `"deep"`, "a.y.2": `30`, "a.y.3": `null`, "b1": `"esc"`,
		"list.1.0": `2`, "list.0.1": `1`, "a.nope": `null`, "list.x": `null`,
	}
	for p := range want {
		refs = append(refs, p)
	}
	var items []string
	for _, p := range refs {
		items = append(items, `"${input.`+p+`}"`)
	}
	doc := "[" + strings.Join(items, ",") + "," + strings.Join(items, ",") + "]"
	v, err := parseJSON([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	tmpl, probs := compileTemplate(v)
	if len(probs) > 0 {
		t.Fatal(probs)
	}
	b, _, ok := tmpl.render(evalContext{input: input}, MaxRenderedBytes)
	if !ok {
		t.Fatal("render failed")
	}
	var got []json.RawMessage
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for i, g := range got {
		p := refs[i%len(refs)]
		if string(g) != want[p] {
			t.Errorf("${input.%s} (use %d) = %s, want %s", p, i/len(refs)+1, g, want[p])
		}
	}
}
