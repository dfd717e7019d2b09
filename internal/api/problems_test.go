package api_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/accord-saga/accord/sdk/client"
)

// layers matches the package prefixes an error gathers inside the server.
var layers = regexp.MustCompile(`\b(engine|sqlite|postgres|storage|saga|bus|dispatch): `)

// TestProblemsSayItOnce checks that the errors users see (through the Go
// client, as the CLI prints them) say what went wrong once, without the
// layers the error passed through inside the server.
func TestProblemsSayItOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.registerOrder(t)
	ctx := context.Background()
	c, err := client.New(b.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	httpStep := "name: h\nversion: 1\nsteps:\n  - name: a\n    kind: pivot\n    action: {http: \"http://u:pw@127.0.0.1:1/x\", name: x}\n"
	conflict := strings.Replace(orderDef, "name: create_order", "name: create_order_v2", 1)
	invalid := "name: bad\nversion: 1\nsteps:\n  - name: a\n    after: [zz]\n    action: {queue: q}\n    compensation: {queue: q}\n"
	for _, c := range []struct {
		name string
		call func() error
		want string
	}{
		{"saga not found", func() error { _, err := c.GetSaga(ctx, "nosuch"); return err }, "nosuch"},
		{"definition not found", func() error {
			_, err := c.StartSaga(ctx, client.StartRequest{Definition: "nosuch"})
			return err
		}, "nosuch"},
		{"conflict", func() error {
			_, _, err := c.RegisterDefinition(ctx, []byte(conflict), client.ContentTypeYAML)
			return err
		}, "order"},
		{"invalid input", func() error {
			_, _, err := c.RegisterDefinition(ctx, []byte(httpStep), client.ContentTypeYAML)
			return err
		}, "credentials"},
		{"invalid definition", func() error {
			_, _, err := c.RegisterDefinition(ctx, []byte(invalid), client.ContentTypeYAML)
			return err
		}, "zz"},
	} {
		err := c.call()
		if err == nil {
			t.Fatalf("%s: no error", c.name)
		}
		text := strings.TrimPrefix(err.Error(), "accord: ")
		if !strings.Contains(text, c.want) || layers.MatchString(text) {
			t.Errorf("%s: %q names layers of the server, or not %q", c.name, text, c.want)
		}
		var ce *client.Error
		if !errors.As(err, &ce) {
			t.Fatalf("%s: %T", c.name, err)
		}
		if msg := ce.Detail; strings.Count(text, msg) != 1 {
			t.Errorf("%s: the detail %q is shown %d times: %q", c.name, msg, strings.Count(text, msg), text)
		}
		for _, d := range ce.Errors {
			if n := strings.Count(text, d.Message); n != 1 {
				t.Errorf("%s: %q is shown %d times: %q", c.name, d.Message, n, text)
			}
		}
	}
}
