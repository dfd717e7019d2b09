package redact

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"postgres://u:pw@db:5432/x?sslmode=disable", "postgres://u:xxxxx@db:5432/x?sslmode=disable"},
		{"postgres://u@db/x?password=pw&sslmode=disable", "postgres://u@db/x?password=xxxxx&sslmode=disable"},
		{"http://collector:4318/v1/traces?api_key=k1", "http://collector:4318/v1/traces?api_key=xxxxx"},
		{"https://hooks.example/in?Token=t1&team=a", "https://hooks.example/in?Token=xxxxx&team=a"},
		{"host=db user=u password=pw dbname=x", "host=db user=u password=xxxxx dbname=x"},
		{"host=db password='p w\\'s' dbname=x", "host=db password=xxxxx dbname=x"},
		{"collector:4318", "collector:4318"},
	} {
		if got := URL(c.in); got != c.want {
			t.Errorf("URL(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestSecrets(t *testing.T) {
	got := Secrets("postgres://u:p%40ss@db/x?password=q1q&sslmode=disable")
	for _, want := range []string{"p@ss", "q1q"} {
		if !strings.Contains(strings.Join(got, " "), want) {
			t.Errorf("Secrets misses %q: %v", want, got)
		}
	}
	if got := Secrets("host=db password='p w\\'s'"); len(got) != 1 || got[0] != "p w's" {
		t.Errorf("Secrets of a key=value string: %q", got)
	}
}

func TestHandlerMasks(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewHandler(slog.NewTextHandler(&buf, nil), []string{"s3cret"})).With("dsn", "x s3cret")
	log.Info("open s3cret", "err", fmt.Errorf("connect: %w", errors.New("password s3cret refused")), slog.Group("g", "v", "s3cret"))
	if strings.Contains(buf.String(), "s3cret") || !strings.Contains(buf.String(), Mask) {
		t.Fatalf("log: %s", buf.String())
	}
	err := Error(errors.New("bad s3cret"), []string{"s3cret"})
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error: %v", err)
	}
}
