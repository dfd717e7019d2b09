package crashtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/sqlite"
)

const (
	childEnv     = "ACCORD_CRASHTEST_CHILD"      // path of the store: child mode
	childSeedEnv = "ACCORD_CRASHTEST_CHILD_SEED" // the child's random seed
	partitions   = 4
	writers      = 4 // goroutines committing in the child
	streamsEach  = 6 // streams per writer goroutine
	owner        = "crashtest-child"
	// childLifetime ends an orphaned child (its parent died) on its own.
	childLifetime = time.Minute
)

// runChild is the child process: it commits until it is killed, printing
// each acknowledged event.
func runChild(path string) int {
	seed, _ := strconv.ParseUint(os.Getenv(childSeedEnv), 10, 64)
	ctx, cancel := context.WithTimeout(context.Background(), childLifetime)
	defer cancel()
	d, err := sqlite.Open(ctx, sqlite.Config{Path: path, Partitions: partitions})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crashtest child:", err)
		return 2
	}
	epochs := make([]int64, partitions)
	for p := range partitions {
		// The same owner takes its lease back at once after a crash.
		l, err := d.LeaseAcquire(ctx, &storage.LeaseAcquireParams{Partition: p, Owner: owner, TTL: childLifetime})
		if err != nil {
			fmt.Fprintln(os.Stderr, "crashtest child:", err)
			return 2
		}
		epochs[p] = l.Epoch
	}
	out := &lineWriter{}
	if err := out.write([]byte("ready\n")); err != nil {
		return 2
	}
	errc := make(chan error, writers)
	for g := range writers {
		go func() {
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			errc <- commitLoop(ctx, d, g, epochs, rng, out)
		}()
	}
	err = <-errc
	fmt.Fprintln(os.Stderr, "crashtest child:", err)
	return 3
}

// lineWriter writes whole commits' lines to stdout in one write each, so a
// kill never leaves half of an acknowledgement in the pipe.
type lineWriter struct{ mu sync.Mutex }

func (w *lineWriter) write(b []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err := os.Stdout.Write(b)
	return err
}

func streamName(g, i int) string { return fmt.Sprintf("g%d-s%d", g, i) }

func payloadHash(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// commitLoop commits to the streams goroutine g owns, tracking their
// versions (it is their only writer), until an error.
func commitLoop(ctx context.Context, d *sqlite.Driver, g int, epochs []int64, rng *rand.Rand, out *lineWriter) error {
	versions := make(map[string]int64)
	byPartition := make(map[int][]string)
	for i := range streamsEach {
		name := streamName(g, i)
		p := storage.PartitionFor(name, partitions)
		byPartition[p] = append(byPartition[p], name)
		info, err := d.StreamInfo(ctx, name)
		switch {
		case errors.Is(err, storage.ErrNotFound):
		case err != nil:
			return err
		default:
			versions[name] = info.Version
		}
	}
	var parts []int
	for p := range byPartition {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	var line bytes.Buffer
	for {
		p := parts[rng.IntN(len(parts))]
		names := slices.Clone(byPartition[p])
		rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
		names = names[:1+rng.IntN(min(2, len(names)))]
		params := &storage.CommitParams{Partition: p, Epoch: epochs[p]}
		for _, name := range names {
			evs := make([]storage.EventInput, 1+rng.IntN(3))
			for i := range evs {
				data := make([]byte, 8+rng.IntN(120))
				for j := range data {
					data[j] = byte(rng.Uint32())
				}
				evs[i] = storage.EventInput{Type: "crash", Data: data}
			}
			params.Appends = append(params.Appends, storage.StreamAppend{Stream: name, ExpectedVersion: versions[name], Events: evs})
		}
		task := fmt.Sprintf("task-%s-%d", names[0], versions[names[0]]+1)
		params.TaskInserts = []storage.TaskInsert{{ID: task, Queue: "crash", Payload: []byte(task)}}
		res, err := d.Commit(ctx, params)
		if err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		// Acknowledged: only now may the lines be printed.
		line.Reset()
		for _, e := range res.Events {
			versions[e.Stream] = e.Version
			fmt.Fprintf(&line, "ack %s %d %d %d %s\n", e.Stream, e.Version, e.Partition, e.Position, payloadHash(e.Data))
		}
		fmt.Fprintf(&line, "task %s\n", task)
		if err := out.write(line.Bytes()); err != nil {
			return fmt.Errorf("stdout: %w", err)
		}
	}
}
