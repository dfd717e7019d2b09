package chaos

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/accord-saga/accord/sdk/client"
)

// T10: the bus under fire. Messages of many keys are published (each batch
// re-sent with its idempotency keys until acknowledged) while consumers of
// one group die mid-message — they walk away from what they hold, their
// connections cut — and the server is killed with SIGKILL and restarted.
// Poison messages kill every consumer that takes them. At the end:
//
//   - lost: a message neither acked nor dead-lettered;
//   - order: a message handed out before the previous message of its key
//     was acked (or, for a dead-lettered predecessor, before its last
//     hand-out), or a message handed out again after its successor was;
//   - dead letters: every poison message, and each dead letter after
//     exactly max_deliveries hand-outs (the server's durable count). A
//     message that is not poison may also end there, if the consumers
//     holding it died (or the server was killed) max_deliveries times in a
//     row: those are counted, not failed;
//   - duplicates stored: the topic holds each message once, whatever the
//     re-sent publishes.
func TestT10BusConsumerAndServerKills(t *testing.T) {
	t.Parallel()
	msgs, keys, poison, kills, consumers := 3000, 60, 4, 2, 6
	if full() {
		msgs, keys, poison, kills, consumers = 100_000, 1000, 20, 10, 16
	}
	const maxDeliveries = 3
	const dieRate = 0.01 // a consumer dies on this share of the messages it takes
	seed := seed(t)
	rng := rand.New(rand.NewPCG(seed, 10))
	dataDir := filepath.Join(t.TempDir(), "accord")
	srv := startServer(t, dataDir)
	ctx := context.Background()
	c := srv.client(t)
	if _, err := c.PutTopic(ctx, "t10", client.TopicConfig{KeepForever: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateGroup(ctx, "t10", "g", client.GroupConfig{MaxDeliveries: maxDeliveries,
		AckTimeout: 5 * time.Second, BackoffInitial: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}

	// The plan: message i has key i%keys and is the (i/keys)-th of its key.
	isPoison := map[int]bool{}
	for len(isPoison) < poison {
		isPoison[rng.IntN(msgs)] = true
	}
	type body struct {
		I      int  `json:"i"`
		Poison bool `json:"poison,omitempty"`
	}

	// The record, in one global order: hand-outs and acks sent.
	var mu sync.Mutex
	var clock int64
	firstOut := make([]int64, msgs) // 0: never handed out
	lastOut := make([]int64, msgs)
	firstAck := make([]int64, msgs) // first ack sent
	handouts := make([]int, msgs)
	var totalHandouts, redeliveries, deaths, ackFailures atomic.Int64

	// One client per server generation: its connections are reused.
	var clMu sync.Mutex
	var cl *client.Client
	clGen := -1
	clientFor := func() (*client.Client, <-chan struct{}) {
		for {
			url, gen, moved := srv.current()
			if url == "" {
				<-moved
				continue
			}
			clMu.Lock()
			if gen != clGen {
				c, err := client.New(url, client.WithRetries(0), client.WithTimeout(5*time.Second))
				if err != nil {
					panic(err)
				}
				cl, clGen = c, gen
			}
			c := cl
			clMu.Unlock()
			return c, moved
		}
	}

	// Publishers: each owns the keys ≡ p (mod publishers) and sends their
	// messages in order, a batch at a time, re-sent until acknowledged,
	// paced so that publishing spans the kills.
	const publishers = 4
	perSec := float64(msgs) / (float64(kills) * 1.25)
	start := time.Now()
	var published sync.WaitGroup
	var resends atomic.Int64
	for p := range publishers {
		published.Add(1)
		go func() {
			defer published.Done()
			var batch []client.Message
			flush := func() {
				for attempt := 0; len(batch) > 0; attempt++ {
					cl, moved := clientFor()
					if _, err := cl.Publish(ctx, "t10", batch...); err == nil {
						resends.Add(int64(attempt))
						batch = batch[:0]
						return
					}
					select {
					case <-moved:
					case <-time.After(50 * time.Millisecond):
					}
				}
			}
			for i := range msgs {
				if (i%keys)%publishers != p {
					continue
				}
				if d := time.Until(start.Add(time.Duration(float64(i) / perSec * float64(time.Second)))); d > 0 && len(batch) == 0 {
					time.Sleep(d) // pacing the load
				}
				batch = append(batch, client.Message{Key: fmt.Sprintf("k%d", i%keys), IdempotencyKey: fmt.Sprintf("m%d", i),
					Payload: body{I: i, Poison: isPoison[i]}})
				if len(batch) == 100 {
					flush()
				}
			}
			flush()
		}()
	}

	// Consumers: each lives until it dies; a dead one is replaced.
	cctx, cancelConsumers := context.WithCancel(ctx)
	var cwg sync.WaitGroup
	var spawnMu sync.Mutex // orders replacements before the final Wait
	stopConsumers := func() {
		spawnMu.Lock()
		cancelConsumers()
		spawnMu.Unlock()
	}
	var consume func(id int, r *rand.Rand)
	consume = func(id int, r *rand.Rand) {
		defer cwg.Done()
		life, die := context.WithCancel(cctx)
		defer die()
		for life.Err() == nil {
			cl, _ := clientFor()
			ds, err := cl.Receive(life, "t10", "g", client.ReceiveOptions{Max: 1, Wait: time.Second})
			if err != nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			for _, d := range ds {
				var b body
				if err := json.Unmarshal(d.Payload, &b); err != nil || b.I < 0 || b.I >= msgs {
					panic(fmt.Sprintf("message %s: bad payload %s", d.ID, d.Payload))
				}
				mu.Lock()
				clock++
				if firstOut[b.I] == 0 {
					firstOut[b.I] = clock
				}
				lastOut[b.I] = clock
				handouts[b.I]++
				mu.Unlock()
				totalHandouts.Add(1)
				if d.Attempt > 1 {
					redeliveries.Add(1)
				}
				if b.Poison || r.Float64() < dieRate {
					// Dies mid-message: everything it holds is abandoned.
					n := deaths.Add(1)
					spawnMu.Lock()
					if cctx.Err() == nil {
						cwg.Add(1)
						go consume(id, rand.New(rand.NewPCG(seed, uint64(n)+100)))
					}
					spawnMu.Unlock()
					return
				}
				mu.Lock()
				clock++
				if firstAck[b.I] == 0 {
					firstAck[b.I] = clock
				}
				mu.Unlock()
				if res, err := cl.Ack(life, "t10", "g", d.Receipt); err != nil || res[0] != nil {
					ackFailures.Add(1) // a lost ack means a redelivery
				}
			}
		}
	}
	for i := range consumers {
		cwg.Add(1)
		go consume(i, rand.New(rand.NewPCG(seed, uint64(i)+1)))
	}

	// The killer.
	begin := time.Now()
	pubDone := make(chan struct{})
	go func() { published.Wait(); close(pubDone) }()
	killed := 0
	var lastRestart time.Time
	for killed < kills {
		<-time.After(time.Duration(500+rng.IntN(1500)) * time.Millisecond) // the random interval between kills
		srv.kill()
		killed++
		lastRestart = time.Now()
		if err := srv.start(); err != nil {
			t.Fatalf("restart %d: %v", killed, err)
		}
	}
	<-pubDone

	// Everything is finished within a bound after the last restart (or
	// the last publish): a key's messages go one at a time, and every
	// consumer death on one costs its ack timeout.
	settle := 5 * time.Minute // a last guard: a busy machine stretches every ack timeout's wait
	if full() {
		settle = 10 * time.Minute
	}
	deadline := time.Now().Add(settle)
	if d := lastRestart.Add(settle); d.After(deadline) {
		deadline = d
	}
	var g *client.Group
	var dlq *client.DeadLetterPage
	for {
		cl, _ := clientFor()
		var err1, err2 error
		g, err1 = cl.GetGroup(ctx, "t10", "g")
		dlq, err2 = cl.DeadLetters(ctx, "t10", "g", client.DeadLetterOptions{Limit: 1000})
		if err1 == nil && err2 == nil && pending(g) == 0 {
			break
		}
		if time.Now().After(deadline) {
			detail := ""
			if g != nil {
				detail = fmt.Sprintf("%+v", g.Partitions)
			}
			t0 := time.Now()
			ds, rerr := cl.Receive(ctx, "t10", "g", client.ReceiveOptions{Max: 1})
			logTail := srv.log.String()
			if len(logTail) > 4000 {
				logTail = logTail[len(logTail)-4000:]
			}
			var unacked []string
			mu.Lock()
			for i := range msgs {
				if handouts[i] > 0 && firstAck[i] == 0 && len(unacked) < 30 {
					unacked = append(unacked, fmt.Sprintf("m%d(key k%d, poison %v, handouts %d, out %d..%d)", i, i%keys, isPoison[i], handouts[i], firstOut[i], lastOut[i]))
				}
			}
			now := clock
			mu.Unlock()
			t.Fatalf("not finished %s after the last restart: pending %d (%v, %v); handouts %d; partitions %s; a receive now took %s and gave %d, %v\nunblocked deliveries:\n%s\nhanded out, never acked (clock %d): %v\nack failures %d, deaths %d\nserver log:\n%s", settle,
				pending(g), err1, err2, totalHandouts.Load(), detail, time.Since(t0), len(ds), rerr, dumpHeads(dataDir), now, unacked, ackFailures.Load(), deaths.Load(), logTail)
		}
		time.Sleep(200 * time.Millisecond)
	}
	stopConsumers()
	cwg.Wait()

	// The checks.
	mu.Lock()
	defer mu.Unlock()
	dead := map[int]bool{}
	var dlqBad []string
	collateral := 0
	for _, d := range dlq.DeadLetters {
		var b body
		_ = json.Unmarshal(d.Message.Payload, &b)
		dead[b.I] = true
		if !b.Poison {
			collateral++
		}
		if d.Attempts != maxDeliveries {
			dlqBad = append(dlqBad, fmt.Sprintf("m%d dead-lettered after %d hand-outs, want %d", b.I, d.Attempts, maxDeliveries))
		}
	}
	for i := range isPoison {
		if !dead[i] {
			dlqBad = append(dlqBad, fmt.Sprintf("poison m%d is not in the dead letters", i))
		}
	}
	var lost, orderViolations []string
	for i := range msgs {
		if !dead[i] && (firstOut[i] == 0 || firstAck[i] == 0) {
			lost = append(lost, fmt.Sprintf("m%d (handed out %d times, acked %v)", i, handouts[i], firstAck[i] != 0))
		}
		prev := i - keys // the previous message of i's key
		if prev < 0 || firstOut[i] == 0 {
			continue
		}
		released := firstAck[prev] // the earliest moment i may go out
		if dead[prev] {
			released = lastOut[prev]
		}
		if released == 0 || firstOut[i] < released {
			orderViolations = append(orderViolations, fmt.Sprintf("m%d handed out at %d before m%d was released (%d)", i, firstOut[i], prev, released))
		}
		if lastOut[prev] > firstOut[i] {
			orderViolations = append(orderViolations, fmt.Sprintf("m%d handed out again at %d after m%d went out at %d", prev, lastOut[prev], i, firstOut[i]))
		}
	}
	stored := countStored(t, srv, msgs)
	line := fmt.Sprintf("T10 seed=%d messages=%d keys=%d consumers=%d kills=%d consumer_deaths=%d handouts=%d redeliveries=%d publish_resends=%d ack_failures=%d stored=%d lost=%d order_violations=%d dead_letters=%d collateral_dead_letters=%d wrong_dead_letters=%d elapsed_s=%.0f",
		seed, msgs, keys, consumers, killed, deaths.Load(), totalHandouts.Load(), redeliveries.Load(), resends.Load(), ackFailures.Load(), stored,
		len(lost), len(orderViolations), len(dlq.DeadLetters), collateral, len(dlqBad), time.Since(begin).Seconds())
	t.Log(line)
	fmt.Println(line)
	for _, v := range append(append(firstN(lost, 10), firstN(orderViolations, 10)...), firstN(dlqBad, 10)...) {
		t.Error(v)
	}
	if stored != msgs {
		t.Errorf("the topic holds %d messages, want %d: a re-sent publish was stored twice or one was lost", stored, msgs)
	}
}

func pending(g *client.Group) int {
	if g == nil {
		return -1
	}
	n := 0
	for _, p := range g.Partitions {
		n += p.Pending
	}
	return n
}

// countStored reads the whole topic, partition by partition, and counts
// distinct message ids (failing on an id stored twice).
func countStored(t *testing.T, srv *server, want int) int {
	t.Helper()
	c := srv.client(t)
	ctx := context.Background()
	seen := map[string]bool{}
	for part := range 8 {
		from := int64(1)
		for {
			ms, err := c.ReadMessages(ctx, "t10", part, from, 1000)
			if err != nil {
				t.Fatalf("read partition %d: %v", part, err)
			}
			for _, m := range ms {
				if seen[m.ID] {
					t.Errorf("message %s stored twice", m.ID)
				}
				seen[m.ID] = true
				from = m.Position + 1
			}
			if len(ms) < 1000 {
				break
			}
		}
	}
	return len(seen)
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("… and %d more", len(s)-n))
	}
	return s
}

// dumpHeads lists a few unblocked deliveries of the store in dir, for a
// failure message.
func dumpHeads(dir string) string {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "accord.db")+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return err.Error()
	}
	defer db.Close()
	rows, err := db.Query(`SELECT partition, position, key, deliveries, claim_token, visible_at FROM deliveries WHERE blocked = 0 LIMIT 10`)
	if err != nil {
		return err.Error()
	}
	defer rows.Close()
	out := fmt.Sprintf("now %d\n", time.Now().UnixMicro())
	for rows.Next() {
		var part, deliveries int
		var pos, visible int64
		var key, token string
		if err := rows.Scan(&part, &pos, &key, &deliveries, &token, &visible); err != nil {
			return out + err.Error()
		}
		out += fmt.Sprintf("p%d@%d key=%s deliveries=%d token=%q visible_at=%d (%+.1fs)\n", part, pos, key, deliveries, token, visible,
			float64(visible-time.Now().UnixMicro())/1e6)
	}
	return out
}
