package postgres_test

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/postgres"
	"github.com/accord-saga/accord/internal/storage/postgres/pgtest"
)

// busStore opens a store with a topic "t", and leases every partition.
func busStore(t *testing.T, partitions int) (*postgres.Driver, []int64) {
	t.Helper()
	d := pgtest.NewStore(t, partitions)
	epochs := leaseAll(t, d, partitions)
	if _, _, err := d.TopicPut(t.Context(), &storage.Topic{Name: "t", Config: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	return d, epochs
}

// leaseAll leases every partition of d and returns the epochs.
func leaseAll(t *testing.T, d *postgres.Driver, partitions int) []int64 {
	t.Helper()
	epochs := make([]int64, partitions)
	for p := range partitions {
		l, err := d.LeaseAcquire(t.Context(), &storage.LeaseAcquireParams{Partition: p, Owner: "node", TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		epochs[p] = l.Epoch
	}
	return epochs
}

func publish(t *testing.T, d *postgres.Driver, p int, epoch int64, msgs ...storage.MessageInput) []storage.Message {
	t.Helper()
	for i := range msgs {
		if msgs[i].Topic == "" {
			msgs[i].Topic = "t"
		}
		if msgs[i].ID == "" {
			msgs[i].ID = storage.NewToken()
		}
	}
	res, err := d.Commit(t.Context(), &storage.CommitParams{Partition: p, Epoch: epoch, Publishes: msgs})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return res.Messages
}

func createGroup(t *testing.T, d *postgres.Driver, name string, start storage.GroupStart, at time.Time) {
	t.Helper()
	if _, created, err := d.GroupCreate(t.Context(), &storage.GroupCreateParams{Topic: "t", Name: name, Start: start, StartAt: at}); err != nil || !created {
		t.Fatalf("group create %s: created %v, %v", name, created, err)
	}
}

func claimN(t *testing.T, d *postgres.Driver, group string, limit, maxDeliveries int) *storage.DeliveryClaimResult {
	t.Helper()
	res, err := d.DeliveryClaim(t.Context(), &storage.DeliveryClaimParams{Topic: "t", Group: group, Limit: limit,
		Visibility: time.Minute, MaxDeliveries: maxDeliveries})
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	return res
}

func refOf(dl storage.Delivery) storage.DeliveryRef {
	return storage.DeliveryRef{Topic: dl.Topic, Group: dl.Group, Partition: dl.Partition, Position: dl.Position, ClaimToken: dl.ClaimToken}
}

func positions(dls []storage.Delivery) []int64 {
	var out []int64
	for _, dl := range dls {
		out = append(out, dl.Position)
	}
	return out
}

func ack(t *testing.T, d *postgres.Driver, dls ...storage.Delivery) {
	t.Helper()
	refs := make([]storage.DeliveryRef, len(dls))
	for i, dl := range dls {
		refs[i] = refOf(dl)
	}
	errs, err := d.DeliveryAck(t.Context(), refs)
	if err != nil {
		t.Fatalf("ack: %v", err)
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("ack %d: %v", i, err)
		}
	}
}

// A key's deliveries go out one at a time, in position order, through
// acks, nacks, dead-lettering and replay; keyless ones are never held back.
func TestBusKeyOrder(t *testing.T) {
	t.Parallel()
	d, epochs := busStore(t, 1)
	ctx := t.Context()
	createGroup(t, d, "g", storage.StartEnd, time.Time{})
	ms := publish(t, d, 0, epochs[0],
		storage.MessageInput{Key: "k", Payload: []byte("1")},
		storage.MessageInput{Key: "k", Payload: []byte("2")},
		storage.MessageInput{Payload: []byte("x")},
		storage.MessageInput{Key: "k", Payload: []byte("3")},
		storage.MessageInput{Payload: []byte("y")},
	)
	if got := []int64{ms[0].Position, ms[4].Position}; !slices.Equal(got, []int64{1, 5}) {
		t.Fatalf("positions %v", got)
	}
	if h, err := d.MessageHead(ctx, 0); err != nil || h != 5 {
		t.Fatalf("message head %d, %v", h, err)
	}
	if h, err := d.PartitionHead(ctx, 0); err != nil || h != 0 {
		t.Fatalf("event head %d, %v", h, err)
	}

	res := claimN(t, d, "g", 10, 2)
	if got := positions(res.Deliveries); !slices.Equal(got, []int64{1, 3, 5}) {
		t.Fatalf("first claim %v, want 1 3 5", got)
	}
	if string(res.Deliveries[0].Message.Payload) != "1" || res.Deliveries[0].Deliveries != 1 {
		t.Fatalf("delivery %+v", res.Deliveries[0])
	}
	stats, err := d.GroupStats(ctx, "t", "g")
	if err != nil || len(stats) != 1 || stats[0].Pending != 5 || stats[0].InFlight != 3 || stats[0].Blocked != 2 || stats[0].Position != 0 {
		t.Fatalf("stats %+v, %v", stats, err)
	}
	ack(t, d, res.Deliveries[0], res.Deliveries[1], res.Deliveries[2])
	res = claimN(t, d, "g", 10, 2)
	if got := positions(res.Deliveries); !slices.Equal(got, []int64{2}) {
		t.Fatalf("second claim %v, want 2", got)
	}
	// A nack keeps the place: 4 waits.
	if err := d.DeliveryNack(ctx, &storage.DeliveryNackParams{Ref: refOf(res.Deliveries[0]), History: []byte("h1")}); err != nil {
		t.Fatal(err)
	}
	if err := d.DeliveryHeartbeat(ctx, refOf(res.Deliveries[0]), time.Minute); !errors.Is(err, storage.ErrTaskClaimLost) {
		t.Fatalf("heartbeat after nack: %v", err)
	}
	res = claimN(t, d, "g", 10, 2)
	if got := positions(res.Deliveries); !slices.Equal(got, []int64{2}) || res.Deliveries[0].Deliveries != 2 || string(res.Deliveries[0].History) != "h1" {
		t.Fatalf("claim after nack %+v", res.Deliveries)
	}
	if err := d.DeliveryNack(ctx, &storage.DeliveryNackParams{Ref: refOf(res.Deliveries[0])}); err != nil {
		t.Fatal(err)
	}
	// Two deliveries made: 2 goes to the dead letters, 4 comes out.
	res = claimN(t, d, "g", 10, 2)
	if got := positions(res.Deliveries); !slices.Equal(got, []int64{4}) || res.DeadLettered != 1 {
		t.Fatalf("claim at max deliveries %v, dead-lettered %d", got, res.DeadLettered)
	}
	four := res.Deliveries[0]
	dls, err := d.DeadLetterList(ctx, &storage.DeadLetterListParams{Topic: "t", Group: "g", Limit: 10})
	if err != nil || len(dls) != 1 || dls[0].Position != 2 || dls[0].Reason != "max deliveries (2) reached" ||
		string(dls[0].Message.Payload) != "2" || dls[0].Deliveries != 2 {
		t.Fatalf("dead letters %+v, %v", dls, err)
	}
	// Replayed behind the outstanding 4.
	if n, err := d.DeadLetterReplay(ctx, "t", "g", nil); err != nil || n != 1 {
		t.Fatalf("replay %d, %v", n, err)
	}
	if res := claimN(t, d, "g", 10, 2); len(res.Deliveries) != 0 {
		t.Fatalf("claimed %v while 4 is out", positions(res.Deliveries))
	}
	ack(t, d, four)
	res = claimN(t, d, "g", 10, 2)
	if got := positions(res.Deliveries); !slices.Equal(got, []int64{2}) || res.Deliveries[0].Deliveries != 3 || res.Deliveries[0].DeliveredBefore != 2 {
		t.Fatalf("claim after replay %+v", res.Deliveries)
	}
	if err := d.DeliveryNack(ctx, &storage.DeliveryNackParams{Ref: refOf(res.Deliveries[0]), DeadLetter: true, Reason: "bad"}); err != nil {
		t.Fatal(err)
	}
	stats, err = d.GroupStats(ctx, "t", "g")
	if err != nil || len(stats) != 1 || stats[0].Pending != 0 || stats[0].DeadLetters != 1 || stats[0].Position != 5 {
		t.Fatalf("stats %+v, %v", stats, err)
	}
	if n, err := d.DeadLetterPurge(ctx, "t", "g", nil); err != nil || n != 1 {
		t.Fatalf("purge %d, %v", n, err)
	}
}

func TestBusGroupStartsAndTopics(t *testing.T) {
	t.Parallel()
	d, epochs := busStore(t, 2)
	ctx := t.Context()
	publish(t, d, 0, epochs[0], storage.MessageInput{Key: "a"}, storage.MessageInput{Key: "a"})
	time.Sleep(2 * time.Millisecond)
	second := publish(t, d, 1, epochs[1], storage.MessageInput{CorrelationID: "c"})
	createGroup(t, d, "all", storage.StartBeginning, time.Time{})
	createGroup(t, d, "end", storage.StartEnd, time.Time{})
	createGroup(t, d, "late", storage.StartTime, second[0].PublishedAt)
	for group, want := range map[string][]int64{"all": {1, 1}, "end": nil, "late": {1}} {
		res := claimN(t, d, group, 10, 5)
		if got := positions(res.Deliveries); !slices.Equal(got, want) {
			t.Errorf("group %s claimed %v, want %v", group, got, want)
		}
	}
	// The same config again: found, not created; another: refused.
	if _, created, err := d.GroupCreate(ctx, &storage.GroupCreateParams{Topic: "t", Name: "all"}); err != nil || created {
		t.Fatalf("again: created %v, %v", created, err)
	}
	if _, _, err := d.GroupCreate(ctx, &storage.GroupCreateParams{Topic: "t", Name: "all", Config: []byte("x")}); !errors.Is(err, storage.ErrGroupExists) {
		t.Fatalf("other config: %v", err)
	}
	if _, _, err := d.GroupCreate(ctx, &storage.GroupCreateParams{Topic: "nope", Name: "g"}); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("absent topic: %v", err)
	}
	if ms, err := d.MessagesByCorrelation(ctx, "c", 10); err != nil || len(ms) != 1 || ms[0].Partition != 1 {
		t.Fatalf("by correlation %+v, %v", ms, err)
	}
	_, err := d.Commit(ctx, &storage.CommitParams{Partition: 0, Epoch: epochs[0],
		Publishes: []storage.MessageInput{{Topic: "nope", ID: "x"}}})
	if !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("publish to an absent topic: %v", err)
	}
	if err := d.TopicDelete(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	if gs, err := d.GroupList(ctx, ""); err != nil || len(gs) != 0 {
		t.Fatalf("groups after topic delete %v, %v", gs, err)
	}
	if h, err := d.MessageHead(ctx, 0); err != nil || h != 2 {
		t.Fatalf("message head after topic delete %d, %v", h, err)
	}
}

// Expired messages are dropped by the claim, and the next of their key
// comes out; a sweep deletes messages with their deliveries and unblocks
// too.
func TestBusExpiryAndSweep(t *testing.T) {
	t.Parallel()
	d, epochs := busStore(t, 1)
	ctx := t.Context()
	createGroup(t, d, "g", storage.StartEnd, time.Time{})
	publish(t, d, 0, epochs[0],
		storage.MessageInput{Key: "k", TTL: time.Microsecond},
		storage.MessageInput{Key: "k", Payload: []byte("old")},
		storage.MessageInput{Key: "k", Payload: []byte("new")},
		storage.MessageInput{Key: "j", Tombstone: true, Payload: []byte("ignored")},
	)
	time.Sleep(time.Millisecond)
	res := claimN(t, d, "g", 10, 5)
	if got := positions(res.Deliveries); !slices.Equal(got, []int64{2, 4}) || res.Expired != 1 {
		t.Fatalf("claim %v, expired %d", got, res.Expired)
	}
	if res.Deliveries[1].Message.Payload != nil || !res.Deliveries[1].Message.Tombstone {
		t.Fatalf("tombstone %+v", res.Deliveries[1].Message)
	}
	// Compaction deletes 1 and 2 (a newer message of k exists): 3 comes out.
	n, err := d.MessageSweep(ctx, &storage.MessageSweepParams{Topic: "t", Partition: 0, Compact: true,
		TombstonesBefore: time.Now().Add(time.Hour)})
	if err != nil || n != 3 {
		t.Fatalf("sweep deleted %d, %v", n, err)
	}
	if err := d.DeliveryHeartbeat(ctx, refOf(res.Deliveries[0]), time.Minute); !errors.Is(err, storage.ErrTaskClaimLost) {
		t.Fatalf("heartbeat of a swept delivery: %v", err)
	}
	res = claimN(t, d, "g", 10, 5)
	if got := positions(res.Deliveries); !slices.Equal(got, []int64{3}) {
		t.Fatalf("claim after sweep %v", got)
	}
	ms, err := d.MessageRead(ctx, &storage.MessageReadParams{Topic: "t", Partition: 0, Limit: 10})
	if err != nil || len(ms) != 1 || ms[0].Position != 3 {
		t.Fatalf("read %+v, %v", ms, err)
	}
	n, err = d.MessageSweep(ctx, &storage.MessageSweepParams{Topic: "t", Partition: 0, MaxBytes: 2})
	if err != nil || n != 1 {
		t.Fatalf("size sweep %d, %v", n, err)
	}
}

// Groups created while commits publish get exactly one delivery for each
// message committed after them, and none for the others; from the
// beginning, one for every message.
func TestBusGroupCreateRacesPublish(t *testing.T) {
	t.Parallel()
	const partitions, commits = 3, 40
	d, epochs := busStore(t, partitions)
	ctx := t.Context()
	var wg sync.WaitGroup
	for p := range partitions {
		wg.Go(func() {
			for i := range commits {
				_, err := d.Commit(ctx, &storage.CommitParams{Partition: p, Epoch: epochs[p], Publishes: []storage.MessageInput{
					{Topic: "t", ID: fmt.Sprint(p, i, "a"), Key: fmt.Sprint(i % 3)},
					{Topic: "t", ID: fmt.Sprint(p, i, "b")},
				}})
				if err != nil {
					t.Errorf("commit: %v", err)
					return
				}
			}
		})
	}
	var groups []string
	for i := range 6 {
		start := storage.StartEnd
		if i%2 == 1 {
			start = storage.StartBeginning
		}
		name := fmt.Sprintf("g%d", i)
		groups = append(groups, name)
		createGroup(t, d, name, start, time.Time{})
		time.Sleep(time.Duration(i) * 3 * time.Millisecond)
	}
	wg.Wait()
	for p := range partitions {
		for i, g := range groups {
			var have []bool
			for pos := int64(1); pos <= 2*commits; pos++ {
				dls, err := d.DeliveriesOf(ctx, "t", p, pos)
				if err != nil {
					t.Fatal(err)
				}
				have = append(have, slices.ContainsFunc(dls, func(dl storage.Delivery) bool { return dl.Group == g }))
			}
			first := slices.Index(have, true)
			if i%2 == 1 && first != 0 || first >= 0 && slices.Contains(have[first:], false) {
				t.Errorf("partition %d group %s: deliveries %v", p, g, have)
			}
		}
	}
}

// Concurrent claimers never hold the same delivery, nor two deliveries of
// one key, and between them they get every message once.
func TestBusConcurrentClaimers(t *testing.T) {
	t.Parallel()
	const partitions, messages, keys = 2, 120, 4
	d, epochs := busStore(t, partitions)
	createGroup(t, d, "g", storage.StartEnd, time.Time{})
	for p := range partitions {
		var ms []storage.MessageInput
		for i := range messages {
			key := ""
			if i%2 == 0 {
				key = fmt.Sprint(i % keys)
			}
			ms = append(ms, storage.MessageInput{Key: key})
		}
		publish(t, d, p, epochs[p], ms...)
	}
	var mu sync.Mutex
	seen := make(map[[2]int64]int)
	out := make(map[string]bool) // partition and key claimed now
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			idle := 0
			for idle < 20 {
				res, err := d.DeliveryClaim(t.Context(), &storage.DeliveryClaimParams{Topic: "t", Group: "g", Limit: 5,
					Visibility: time.Minute, MaxDeliveries: 3})
				if err != nil {
					t.Errorf("claim: %v", err)
					return
				}
				if len(res.Deliveries) == 0 {
					idle++
					time.Sleep(5 * time.Millisecond)
					continue
				}
				idle = 0
				mu.Lock()
				for _, dl := range res.Deliveries {
					seen[[2]int64{int64(dl.Partition), dl.Position}]++
					if dl.Key != "" {
						k := fmt.Sprint(dl.Partition, "/", dl.Key)
						if out[k] {
							t.Errorf("two deliveries of key %s out at once", k)
						}
						out[k] = true
					}
				}
				mu.Unlock()
				time.Sleep(time.Millisecond)
				mu.Lock()
				for _, dl := range res.Deliveries {
					delete(out, fmt.Sprint(dl.Partition, "/", dl.Key))
				}
				mu.Unlock()
				refs := make([]storage.DeliveryRef, len(res.Deliveries))
				for i, dl := range res.Deliveries {
					refs[i] = refOf(dl)
				}
				if errs, err := d.DeliveryAck(t.Context(), refs); err != nil || slices.ContainsFunc(errs, func(e error) bool { return e != nil }) {
					t.Errorf("ack: %v %v", err, errs)
					return
				}
			}
		})
	}
	wg.Wait()
	if len(seen) != partitions*messages {
		t.Fatalf("%d messages delivered, want %d", len(seen), partitions*messages)
	}
	for k, n := range seen {
		if n != 1 {
			t.Fatalf("message %v delivered %d times", k, n)
		}
	}
}

// A store written by schema version 1 gains the bus when opened.
func TestBusMigratesVersion1Store(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	v1, err := os.ReadFile("migrations/001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	exec(t, url, "CREATE SCHEMA "+schema, "SET search_path TO "+schema+"; "+string(v1)+`;
		INSERT INTO meta (key, value) VALUES ('schema_version', 1), ('partitions', 2);
		INSERT INTO partitions (partition) VALUES (0), (1);
		UPDATE partitions SET head = 3`)
	d, err := pgtest.Open(t.Context(), url, schema, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if v := d.Info().SchemaVersion; v != postgres.SchemaVersion {
		t.Fatalf("schema version %d", v)
	}
	l, err := d.LeaseAcquire(t.Context(), &storage.LeaseAcquireParams{Partition: 1, Owner: "n", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.TopicPut(t.Context(), &storage.Topic{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	if ms := publish(t, d, 1, l.Epoch, storage.MessageInput{}); ms[0].Position != 1 {
		t.Fatalf("first message at %d", ms[0].Position)
	}
}

// Messages of a key published while its deliveries are acked all come
// out: an ack that unblocks the next delivery and a commit that adds one
// never miss each other.
func TestBusPublishWhileAcking(t *testing.T) {
	t.Parallel()
	const partitions, messages = 3, 100
	d, epochs := busStore(t, partitions)
	createGroup(t, d, "g", storage.StartEnd, time.Time{})
	var wg sync.WaitGroup
	for p := range partitions {
		wg.Go(func() {
			for i := range messages {
				_, err := d.Commit(t.Context(), &storage.CommitParams{Partition: p, Epoch: epochs[p], Publishes: []storage.MessageInput{
					{Topic: "t", ID: fmt.Sprint(i), Key: "a"},
				}})
				if err != nil {
					t.Errorf("commit: %v", err)
					return
				}
			}
		})
	}
	var acked atomic.Int64
	deadline := time.Now().Add(20 * time.Second)
	for range 3 {
		wg.Go(func() {
			for acked.Load() < partitions*messages && time.Now().Before(deadline) {
				res, err := d.DeliveryClaim(t.Context(), &storage.DeliveryClaimParams{Topic: "t", Group: "g", Limit: 1,
					Visibility: time.Minute, MaxDeliveries: 5})
				if err != nil {
					t.Errorf("claim: %v", err)
					return
				}
				for _, dl := range res.Deliveries {
					if errs, err := d.DeliveryAck(t.Context(), []storage.DeliveryRef{refOf(dl)}); err != nil || errs[0] != nil {
						t.Errorf("ack: %v %v", err, errs)
						return
					}
					acked.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := acked.Load(); n != partitions*messages {
		stats, err := d.GroupStats(t.Context(), "t", "g")
		t.Fatalf("acked %d of %d messages; stats %+v, %v", n, partitions*messages, stats, err)
	}
}

// A group deleted while commits publish leaves no delivery behind.
func TestBusGroupDeleteRacesPublish(t *testing.T) {
	t.Parallel()
	const commits = 60
	d, epochs := busStore(t, 1)
	ctx := t.Context()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range commits {
			publish(t, d, 0, epochs[0], storage.MessageInput{Key: fmt.Sprint(i % 2)})
		}
	})
	for range 10 {
		createGroup(t, d, "x", storage.StartBeginning, time.Time{})
		time.Sleep(2 * time.Millisecond)
		if err := d.GroupDelete(ctx, "t", "x"); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for pos := int64(1); pos <= commits; pos++ {
		if dls, err := d.DeliveriesOf(ctx, "t", 0, pos); err != nil || len(dls) != 0 {
			t.Fatalf("message %d: deliveries %+v, %v", pos, dls, err)
		}
	}
}
