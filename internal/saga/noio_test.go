package saga

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The core must stay pure: no IO, no clock, no global randomness, no
// goroutines. This test reads the package's own non-test sources and
// rejects anything that could break that, so that a change that needs IO
// has to be argued for here first.
func TestCoreIsPure(t *testing.T) {
	// Imports that are pure computation. "io" only for io.EOF from decoders
	// reading in-memory bytes.
	allowed := map[string]bool{
		"bytes": true, "crypto/sha256": true, "encoding/hex": true, "encoding/json": true,
		"errors": true, "fmt": true, "io": true, "math": true, "net/url": true, "slices": true,
		"sort": true, "strconv": true, "strings": true, "time": true, "unicode/utf8": true,
		"go.yaml.in/yaml/v3": true,
		// What an id may hold: pure string checks.
		"github.com/accord-saga/accord/internal/ident": true,
	}
	// Named so that the failure message says why.
	forbidden := []string{
		"os", "os/exec", "net", "net/http", "database/sql", "math/rand", "math/rand/v2",
		"crypto/rand", "io/fs", "io/ioutil", "log", "log/slog", "syscall", "unsafe", "sync",
		"runtime", "context", "embed", "plugin",
	}
	// Functions of allowed packages that still read the clock, sleep, or
	// write to the process's standard output (fmt.Fprint* is
	// fine: without os, it can only reach in-memory writers).
	forbiddenCalls := map[string]bool{
		"time.Now": true, "time.Since": true, "time.Until": true, "time.Sleep": true,
		"time.After": true, "time.AfterFunc": true, "time.Tick": true, "time.NewTimer": true,
		"time.NewTicker": true, "time.LoadLocation": true, "time.Local": true,
		"fmt.Print": true, "fmt.Println": true, "fmt.Printf": true,
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		local := map[string]string{} // import name in this file → path
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range forbidden {
				if path == bad {
					t.Errorf("%s imports %q: the saga core must not do IO, read the clock or draw global randomness", fset.Position(imp.Pos()), path)
				}
			}
			if !allowed[path] {
				t.Errorf("%s imports %q, which is not on the pure list in this test", fset.Position(imp.Pos()), path)
			}
			name := path[strings.LastIndex(path, "/")+1:]
			if imp.Name != nil {
				name = imp.Name.Name
			}
			local[name] = path
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.GoStmt:
				t.Errorf("%s: go statement: the saga core starts no goroutines", fset.Position(n.Pos()))
			case *ast.SelectorExpr:
				if id, ok := n.X.(*ast.Ident); ok {
					if path, ok := local[id.Name]; ok {
						if full := path + "." + n.Sel.Name; forbiddenCalls[full] {
							t.Errorf("%s: %s: the saga core takes time from its input and writes nowhere", fset.Position(n.Pos()), full)
						}
					}
				}
			}
			return true
		})
	}
	if checked < 5 {
		t.Fatalf("checked only %d files; is the test running in the package directory?", checked)
	}
}
