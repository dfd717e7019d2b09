package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/accord-saga/accord/internal/bus"
	"github.com/accord-saga/accord/internal/engine"
)

// BusConfig configures a bus benchmark.
type BusConfig struct {
	// Store, DatabaseURL, Dir, Partitions and Durability as for sagas.
	Store       string
	DatabaseURL string
	Dir         string
	Partitions  int
	Durability  string
	// Messages to publish (default 20,000), in batches of Batch (default
	// 10) from Publishers concurrent publishers (default 8), over Keys
	// message keys (default 1,000; 0 publishes keyless messages).
	Messages   int
	Batch      int
	Publishers int
	Keys       int
	// Groups consume every message (default 1), each with Consumers
	// concurrent consumers (default 4) receiving up to 100 at a time.
	Groups    int
	Consumers int
}

// BusResult is what a bus benchmark reports.
type BusResult struct {
	Store            string  `json:"store"`
	Durability       string  `json:"durability"`
	Messages         int     `json:"messages"`
	Batch            int     `json:"batch"`
	Publishers       int     `json:"publishers"`
	Keys             int     `json:"keys"`
	Groups           int     `json:"groups"`
	Consumers        int     `json:"consumers_per_group"`
	PublishPerSec    float64 `json:"publish_per_sec"`
	PublishAckP99ms  float64 `json:"publish_ack_p99_ms"`
	DeliveredPerSec  float64 `json:"delivered_per_sec"`
	E2EP50ms         float64 `json:"e2e_p50_ms"`
	E2EP99ms         float64 `json:"e2e_p99_ms"`
	Delivered        int     `json:"delivered"`
	Redelivered      int     `json:"redelivered"`
	ElapsedSec       float64 `json:"elapsed_sec"`
	ServerCPUmsPer1k float64 `json:"cpu_ms_per_1000_messages"`
}

// RunBus publishes messages through an engine and a bus in this process
// while consumers receive and ack them, and reports publish throughput and
// latency, delivery throughput and end-to-end latency (publish commit to
// receipt by a consumer).
func RunBus(ctx context.Context, cfg BusConfig) (*BusResult, error) {
	cfg.Messages = cmpInt(cfg.Messages, 20_000)
	cfg.Batch = cmpInt(cfg.Batch, 10)
	cfg.Publishers = cmpInt(cfg.Publishers, 8)
	cfg.Groups = cmpInt(cfg.Groups, 1)
	cfg.Consumers = cmpInt(cfg.Consumers, 4)
	if cfg.Keys < 0 || cfg.Batch > bus.MaxBatchMessages || cfg.Messages < cfg.Batch {
		return nil, fmt.Errorf("bench: bus: need 0 <= keys, 1 <= batch <= %d, messages >= batch", bus.MaxBatchMessages)
	}
	sc := SagaConfig{Store: cfg.Store, DatabaseURL: cfg.DatabaseURL, Dir: cfg.Dir, Partitions: cfg.Partitions, Durability: cfg.Durability}
	store, cleanup, err := sc.open(ctx, 1)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	var b *bus.Bus
	eng, err := engine.New(engine.Config{Store: store, Logger: sc.Logger, OnPublish: func(t string) { b.Notify(t) }})
	if err != nil {
		return nil, err
	}
	b, err = bus.New(bus.Config{Store: store, Publisher: eng, Logger: sc.Logger})
	if err != nil {
		return nil, err
	}
	if err := eng.Start(ctx); err != nil {
		return nil, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = eng.Stop(sctx)
	}()
	const topic = "bench"
	if _, _, err := b.PutTopic(ctx, topic, bus.TopicConfig{}); err != nil {
		return nil, err
	}
	for g := range cfg.Groups {
		if _, _, err := b.CreateGroup(ctx, topic, fmt.Sprintf("g%d", g), bus.GroupConfig{}, bus.GroupStart{}); err != nil {
			return nil, err
		}
	}

	want := cfg.Messages * cfg.Groups
	var delivered, redelivered atomic.Int64
	var mu sync.Mutex
	var e2e []time.Duration
	done := make(chan struct{})
	var doneOnce sync.Once
	cctx, stopConsumers := context.WithCancel(ctx)
	defer stopConsumers()
	var cwg sync.WaitGroup
	for g := range cfg.Groups {
		for range cfg.Consumers {
			cwg.Add(1)
			go func() {
				defer cwg.Done()
				consumeBench(cctx, b, topic, fmt.Sprintf("g%d", g), func(ds []bus.Delivery, at time.Time) {
					local := make([]time.Duration, 0, len(ds))
					for _, d := range ds {
						local = append(local, at.Sub(d.Message.PublishedAt))
						if d.Attempt > 1 {
							redelivered.Add(1)
						}
					}
					mu.Lock()
					e2e = append(e2e, local...)
					mu.Unlock()
					if delivered.Add(int64(len(ds))) >= int64(want) {
						doneOnce.Do(func() { close(done) })
					}
				})
			}()
		}
	}

	cpu0 := cpuTime()
	start := time.Now()
	var next atomic.Int64
	var pubMu sync.Mutex
	var pubLat []time.Duration
	var pubErr error
	var pwg sync.WaitGroup
	for range cfg.Publishers {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			msgs := make([]bus.Message, cfg.Batch)
			for {
				first := next.Add(int64(cfg.Batch)) - int64(cfg.Batch)
				if first >= int64(cfg.Messages) {
					return
				}
				n := min(int64(cfg.Batch), int64(cfg.Messages)-first)
				for i := range n {
					seq := first + i
					m := bus.Message{Payload: json.RawMessage(fmt.Sprintf(`{"seq":%d}`, seq))}
					if cfg.Keys > 0 {
						m.Key = fmt.Sprintf("k%d", seq%int64(cfg.Keys))
					}
					msgs[i] = m
				}
				t0 := time.Now()
				_, err := b.Publish(ctx, topic, msgs[:n])
				lat := time.Since(t0)
				pubMu.Lock()
				pubLat = append(pubLat, lat)
				if err != nil && pubErr == nil {
					pubErr = err
				}
				pubMu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	pwg.Wait()
	published := time.Since(start)
	if pubErr != nil {
		return nil, fmt.Errorf("bench: publish: %w", pubErr)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		return nil, fmt.Errorf("bench: only %d of %d deliveries within 5m of the last publish", delivered.Load(), want)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	stopConsumers()
	cwg.Wait()
	slices.Sort(e2e)
	slices.Sort(pubLat)
	return &BusResult{
		Store: sc.Store, Durability: sc.Durability, Messages: cfg.Messages, Batch: cfg.Batch, Publishers: cfg.Publishers,
		Keys: cfg.Keys, Groups: cfg.Groups, Consumers: cfg.Consumers,
		PublishPerSec:    float64(cfg.Messages) / published.Seconds(),
		PublishAckP99ms:  pct(pubLat, 0.99),
		DeliveredPerSec:  float64(want) / elapsed.Seconds(),
		E2EP50ms:         pct(e2e, 0.50),
		E2EP99ms:         pct(e2e, 0.99),
		Delivered:        int(delivered.Load()),
		Redelivered:      int(redelivered.Load()),
		ElapsedSec:       elapsed.Seconds(),
		ServerCPUmsPer1k: float64(cpu.Milliseconds()) / float64(want) * 1000,
	}, nil
}

// consumeBench receives and acks a group's messages until ctx ends.
func consumeBench(ctx context.Context, b *bus.Bus, topic, group string, seen func([]bus.Delivery, time.Time)) {
	for ctx.Err() == nil {
		ds, err := b.Receive(ctx, topic, group, 100, time.Second, 0)
		if err != nil || len(ds) == 0 {
			continue
		}
		at := time.Now()
		rs := make([]string, len(ds))
		for i, d := range ds {
			rs[i] = d.Receipt
		}
		if _, err := b.Ack(ctx, topic, group, rs); err != nil {
			continue // unacked: handed out again after the ack timeout
		}
		seen(ds, at)
	}
}

func cmpInt(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// WriteBusResult prints a bus benchmark's result.
func WriteBusResult(w io.Writer, r *BusResult, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(r)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "store\t%s (durability %s)\n", r.Store, r.Durability)
	fmt.Fprintf(tw, "load\t%d messages in batches of %d from %d publishers, %d keys; %d group(s) × %d consumers\n",
		r.Messages, r.Batch, r.Publishers, r.Keys, r.Groups, r.Consumers)
	fmt.Fprintf(tw, "publish\t%.0f messages/s, batch ack p99 %.1f ms\n", r.PublishPerSec, r.PublishAckP99ms)
	fmt.Fprintf(tw, "delivery\t%.0f deliveries/s acked (%d, %d redelivered)\n", r.DeliveredPerSec, r.Delivered, r.Redelivered)
	fmt.Fprintf(tw, "end to end\tp50 %.1f ms, p99 %.1f ms (publish commit to receipt)\n", r.E2EP50ms, r.E2EP99ms)
	fmt.Fprintf(tw, "cpu\t%.0f ms per 1,000 deliveries (whole process)\n", r.ServerCPUmsPer1k)
	fmt.Fprintf(tw, "elapsed\t%.1f s\n", r.ElapsedSec)
	return tw.Flush()
}
