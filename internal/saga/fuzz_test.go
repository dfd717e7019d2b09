package saga

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseDefinition: no document makes ParseDefinition panic, and every
// accepted document has a canonical form that parses back to itself.
func FuzzParseDefinition(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.yaml")
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		minimal(okStep),
		`{"name":"t","version":1,"steps":[{"name":"a","action":{"http":"https://x/y"},"kind":"pivot","input":{"a":"${input.a} and $${x}"}}]}`,
		minimal("  - name: a\n    after: [a]\n    action: {queue: q}\n"),
		"name: [\n",
		"{\"a\":" + "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
		"a: &x [*x]\n",
		"name: t\nversion: 1\nsteps:\n- {name: a, action: {queue: q}, compensation: {queue: q}, input: '${steps.a.output'}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		def, err := ParseDefinition(data)
		if err != nil {
			return
		}
		again, err := ParseDefinition(def.Canonical())
		if err != nil {
			t.Fatalf("canonical form rejected: %v\n%s", err, def.Canonical())
		}
		if string(again.Canonical()) != string(def.Canonical()) {
			t.Fatalf("canonical form not stable:\n%s\n%s", def.Canonical(), again.Canonical())
		}
	})
}
