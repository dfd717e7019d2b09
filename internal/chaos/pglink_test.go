package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/accord-saga/accord/internal/storage/postgres/pgtest"
	"github.com/accord-saga/accord/sdk/client"
)

// statusCounter counts the 5xx answers of Accord's API by status.
type statusCounter struct {
	mu    sync.Mutex
	codes map[int]int
	next  http.RoundTripper
}

func (s *statusCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := s.next.RoundTrip(r)
	if err == nil && res.StatusCode >= 500 {
		s.mu.Lock()
		s.codes[res.StatusCode]++
		s.mu.Unlock()
	}
	return res, err
}

func (s *statusCounter) count(code int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.codes[code]
}

func (s *statusCounter) others() map[int]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int]int{}
	for c, n := range s.codes {
		if c != http.StatusServiceUnavailable {
			out[c] = n
		}
	}
	return out
}

// TestT3AmbiguousCommits is scenario T3: the server runs on PostgreSQL
// through a proxy that, under load, cuts links right after forwarding a
// COMMIT (the database commits, the server never hears: an ambiguous
// commit), resets every connection at other random moments, and now and
// then refuses connections for a while (the link is down). At the end: every acknowledged saga ended once, no step
// result was recorded twice, no effect was applied twice, the API
// answered 503 and never another 5xx while the link was down, the server
// never crashed, and work resumed by itself.
//
// PostgreSQL is the one pgtest names; when it cannot be reached the test
// fails with CI=true and is skipped otherwise.
func TestT3AmbiguousCommits(t *testing.T) {
	t.Parallel()
	sagas, cuts, minGap, maxGap := 200, 12, 200*time.Millisecond, 700*time.Millisecond
	if full() {
		sagas, cuts, minGap, maxGap = 3000, 2000, 20*time.Millisecond, 200*time.Millisecond
	}
	const downEvery, downFor = 4, time.Second
	dbURL := pgtest.URL(t)
	seed := seed(t)
	rng := mrand.New(mrand.NewPCG(seed, 3))
	schema := "accord_chaos_" + randomHex(t)
	t.Cleanup(func() { dropSchema(t, dbURL, schema) })

	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := NewPGProxy(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	u.Host = proxy.Addr()

	dir := t.TempDir()
	p, err := NewParticipant(filepath.Join(dir, "ledger.db"), ParticipantConfig{
		Latency: time.Millisecond, LatencyJitter: 2 * time.Millisecond, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	srv := startServer(t, filepath.Join(dir, "accord"), "--database-url", u.String(), "--database-schema", schema)
	counter := &statusCounter{codes: map[int]int{}, next: http.DefaultTransport}
	hc := &http.Client{Transport: counter}
	c := srv.client(t, client.WithHTTPClient(hc), client.WithRetries(0), client.WithTimeout(10*time.Second))
	ctx := context.Background()
	retry := "{initial_interval: 20ms, max_interval: 500ms, max_attempts: 1000}"
	if _, _, err := c.RegisterDefinition(ctx, []byte(definition("t3", p.URL(), 3, retry)), "application/yaml"); err != nil {
		t.Fatal(err)
	}

	plans := make([]Expect, sagas)
	keys := make([]string, sagas)
	for i := range plans {
		plans[i].Steps = stepNames(3)
		if rng.IntN(10) < 3 {
			plans[i].FailAt = plans[i].Steps[rng.IntN(3)]
		}
		keys[i] = fmt.Sprintf("t3-%d-%d", seed, i)
	}
	rate := float64(sagas) / (float64(cuts) * ((minGap+maxGap)/2 + downFor/downEvery).Seconds())
	begin := time.Now()
	work := make(chan int)
	go func() {
		for i := range sagas {
			if d := time.Until(begin.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
				<-time.After(d) // pacing the load
			}
			work <- i
		}
		close(work)
	}()
	var acked sync.WaitGroup
	acked.Add(sagas)
	allAcked := make(chan struct{})
	go func() { acked.Wait(); close(allAcked) }()
	var resends atomic.Int64
	for range 8 {
		go func() {
			for i := range work {
				for {
					res, err := c.StartSaga(ctx, client.StartRequest{Definition: "t3", IdempotencyKey: keys[i],
						Input: map[string]string{"fail_at": plans[i].FailAt}})
					if err == nil {
						plans[i].ID = res.ID
						acked.Done()
						break
					}
					resends.Add(1)
					<-time.After(50 * time.Millisecond) // back off before sending the start again
				}
			}
		}()
	}

	// The cutter: reset every connection at random moments; every
	// downEvery-th time, refuse connections for downFor and read through
	// the API meanwhile.
	done, downs, downReads, downOK := 0, 0, 0, 0
	var reset int64
	var lastCut time.Time
	for done < cuts || !closed(allAcked) {
		<-time.After(minGap + time.Duration(rng.Int64N(int64(maxGap-minGap)))) // the random moment of the next cut
		if srv.exited() {
			t.Fatalf("the server exited after %d cuts:\n%s", done, srv.log.String())
		}
		done++
		lastCut = time.Now()
		if done%downEvery != 0 {
			if rng.IntN(3) > 0 {
				proxy.ArmCommitCuts(1) // the next COMMIT, on whichever connection
			} else {
				reset += int64(proxy.Reset())
			}
			continue
		}
		downs++
		proxy.SetRefuse(true)
		reset += int64(proxy.Reset())
		until := time.Now().Add(downFor)
		for time.Now().Before(until) {
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, err := c.ListSagas(rctx, client.ListOptions{Limit: 1})
			cancel()
			downReads++
			if err == nil {
				downOK++
			}
			<-time.After(50 * time.Millisecond) // pace the reads during the outage
		}
		proxy.SetRefuse(false)
	}
	<-allAcked
	resumed := time.Now()

	ids := make([]string, sagas)
	for i := range plans {
		ids[i] = plans[i].ID
	}
	wctx, cancel := context.WithDeadline(ctx, lastCut.Add(5*time.Minute)) // a last guard: a busy machine slows the drain
	defer cancel()
	_ = waitTerminal(wctx, c, ids)
	drain := time.Since(resumed)
	if srv.exited() {
		t.Fatalf("the server exited:\n%s", srv.log.String())
	}
	for i, key := range keys {
		res, err := c.StartSaga(ctx, client.StartRequest{Definition: "t3", IdempotencyKey: key,
			Input: map[string]string{"fail_at": plans[i].FailAt}})
		if err != nil {
			t.Fatalf("start %s again: %v", key, err)
		}
		if res.ID != plans[i].ID || res.Created {
			t.Errorf("start %s again: saga %s (created %v), first acknowledged as %s", key, res.ID, res.Created, plans[i].ID)
		}
	}
	ledger, err := p.Ledger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res := Check(ctx, c, ledger, plans)
	others := counter.others()
	report(t, fmt.Sprintf("T3 seed=%d sagas=%d completed=%d compensated=%d cuts=%d commit_cuts=%d connections_reset=%d downs=%d lost=%d duplicated=%d stuck=%d redeliveries=%d start_resends=%d api_503=%d api_other_5xx=%v reads_while_down=%d ok_while_down=%d drain_ms=%d elapsed_s=%.0f",
		seed, res.Sagas, res.Completed, res.Compensated, done, proxy.CommitCuts(), reset, downs, res.Lost, res.Duplicated, res.Stuck, res.Redeliveries,
		resends.Load(), counter.count(http.StatusServiceUnavailable), others, downReads, downOK, drain.Milliseconds(), time.Since(begin).Seconds()), res)
	if res.Failed() {
		t.Logf("server log (tail):\n%s", srv.log.String())
	}
	if len(others) > 0 {
		t.Errorf("the API answered 5xx other than 503: %v", others)
	}
	if proxy.CommitCuts() == 0 {
		t.Errorf("no link was cut at commit time: the scenario did not make an ambiguous commit")
	}
	if downs > 0 && counter.count(http.StatusServiceUnavailable) == 0 {
		t.Errorf("the link was down %d times and the API never answered 503", downs)
	}
}

func randomHex(t *testing.T) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func dropSchema(t *testing.T, dbURL, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Errorf("drop schema %s: %v", schema, err)
		return
	}
	defer conn.Close(ctx)
	// The name is ours: the prefix and hex digits, safe unquoted.
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
		t.Errorf("drop schema %s: %v", schema, err)
	}
}
