package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/accord-saga/accord/sdk/client"
)

// prometheusMetrics are named by the alert rules but made by Prometheus,
// not by Accord.
var prometheusMetrics = []string{"up"}

// ruleMetricNames returns the metric names of every expression in a
// Prometheus rules file.
func ruleMetricNames(t *testing.T, path string) []string {
	t.Helper()
	content, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(content, &file); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	// A metric name is an identifier followed by a selector, a range or
	// an operator — not by "(" (a function) and not inside a label
	// matcher or a by/without clause, which this strips first.
	matchers := regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]|\b(by|without|on|ignoring)\s*\([^)]*\)|"[^"]*"`)
	ident := regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*\b\s*\(?`)
	keywords := map[string]bool{"or": true, "and": true, "unless": true, "on": true, "ignoring": true, "group_left": true, "group_right": true, "bool": true, "offset": true}
	var names []string
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.Expr == "" {
				t.Errorf("rule %s has no expression", r.Alert)
			}
			expr := matchers.ReplaceAllString(r.Expr, " ")
			for _, m := range ident.FindAllString(expr, -1) {
				m = strings.TrimSpace(m)
				if strings.HasSuffix(m, "(") || keywords[m] {
					continue
				}
				if !slices.Contains(names, m) {
					names = append(names, m)
				}
			}
		}
	}
	return names
}

// TestAlertRulesUseExportedMetrics holds deploy/prometheus/alerts.yml to
// the metrics a running server exports: after a little work of every kind
// (a push step, a pull queue, a bus group), every metric the rules name is
// on /metrics. A renamed metric or a typo in a rule fails here instead of
// silencing an alert.
func TestAlertRulesUseExportedMetrics(t *testing.T) {
	t.Parallel()
	names := ruleMetricNames(t, "../../deploy/prometheus/alerts.yml")
	if len(names) < 5 {
		t.Fatalf("found only %v in the rules", names)
	}
	t.Logf("metrics named by the rules: %v", names)
	srv := startServer(t, t.TempDir())
	c := srv.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	participant := pushServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusUnprocessableEntity) // a business failure: the saga ends at once
	}))
	def := `name: alerts
version: 1
steps:
  - name: remote
    kind: pivot
    action: {http: ` + participant + `}
`
	if _, _, err := c.RegisterDefinition(ctx, []byte(def), "application/yaml"); err != nil {
		t.Fatal(err)
	}
	started, err := c.StartSaga(ctx, client.StartRequest{Definition: "alerts"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitSaga(ctx, started.ID); err != nil {
		t.Fatal(err)
	}
	queued := `name: queued
version: 1
steps:
  - name: local
    kind: pivot
    action: {queue: alerts, name: work}
`
	if _, _, err := c.RegisterDefinition(ctx, []byte(queued), "application/yaml"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StartSaga(ctx, client.StartRequest{Definition: "queued"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutTopic(ctx, "alerts", client.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateGroup(ctx, "alerts", "billing", client.GroupConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Publish(ctx, "alerts", client.Message{Key: "k", Payload: 1}); err != nil {
		t.Fatal(err)
	}

	// Gauges measured on a schedule (the bus groups' every scan) appear a
	// few seconds later: read until all are there or the context ends.
	var missing []string
	for {
		exposed := scrape(ctx, t, srv.url+"/metrics")
		missing = missing[:0]
		for _, n := range names {
			if !slices.Contains(prometheusMetrics, n) && !exposed[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("metrics named by the alert rules but not exported: %v", missing)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// scrape returns the names of the samples on a /metrics page.
func scrape(ctx context.Context, t *testing.T, url string) map[string]bool {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}
