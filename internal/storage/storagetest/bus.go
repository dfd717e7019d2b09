package storagetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

// busStore is a store with its bus.
type busStore struct {
	*store
}

// openBus returns a fresh store.
func openBus(t *testing.T, h Harness, partitions int) *busStore {
	t.Helper()
	return &busStore{open(t, h, partitions)}
}

// openGroups returns a fresh store with topic and, on it, groups started
// at the end.
func openGroups(t *testing.T, h Harness, partitions int, topic string, groups ...string) *busStore {
	t.Helper()
	s := openBus(t, h, partitions)
	s.topic(topic)
	for _, g := range groups {
		s.group(topic, g, storage.StartEnd, time.Time{})
	}
	return s
}

// b is the bus of the current driver (Reopen replaces it).
func (s *busStore) b() storage.BusStore { return s.d }

func (s *busStore) topic(name string) {
	s.t.Helper()
	if _, _, err := s.b().TopicPut(s.ctx, &storage.Topic{Name: name, Config: []byte(`{}`)}); err != nil {
		s.t.Fatalf("TopicPut(%s): %v", name, err)
	}
}

func (s *busStore) group(topic, name string, start storage.GroupStart, at time.Time) storage.Group {
	s.t.Helper()
	g, _, err := s.b().GroupCreate(s.ctx, &storage.GroupCreateParams{Topic: topic, Name: name, Config: []byte(`{"g":1}`), Start: start, StartAt: at})
	if err != nil {
		s.t.Fatalf("GroupCreate(%s/%s): %v", topic, name, err)
	}
	return g
}

func (s *busStore) publish(p int, msgs ...storage.MessageInput) *storage.CommitResult {
	s.t.Helper()
	return s.commit(p, &storage.CommitParams{Publishes: msgs})
}

// msg is a message of topic with key whose id and payload are id.
func msg(topic, key, id string) storage.MessageInput {
	return storage.MessageInput{Topic: topic, Key: key, ID: id, Payload: []byte("payload " + id)}
}

func (s *busStore) claim(topic, group string, limit int, vis time.Duration, maxDeliveries int) *storage.DeliveryClaimResult {
	s.t.Helper()
	res, err := s.b().DeliveryClaim(s.ctx, &storage.DeliveryClaimParams{Topic: topic, Group: group, Limit: limit, Visibility: vis, MaxDeliveries: maxDeliveries})
	if err != nil {
		s.t.Fatalf("DeliveryClaim(%s/%s): %v", topic, group, err)
	}
	return res
}

// claimIDs claims with a long visibility and returns the message ids.
func (s *busStore) claimIDs(topic, group string) []string {
	s.t.Helper()
	return ids(s.claim(topic, group, 100, longTTL, 100).Deliveries)
}

func (s *busStore) ack(ds ...storage.Delivery) {
	s.t.Helper()
	refs := make([]storage.DeliveryRef, len(ds))
	for i := range ds {
		refs[i] = ref(ds[i])
	}
	errs, err := s.b().DeliveryAck(s.ctx, refs)
	if err != nil {
		s.t.Fatalf("DeliveryAck: %v", err)
	}
	for i, e := range errs {
		if e != nil {
			s.t.Fatalf("DeliveryAck of %s: %v", ds[i].Message.ID, e)
		}
	}
}

func (s *busStore) nack(d storage.Delivery, p storage.DeliveryNackParams) {
	s.t.Helper()
	p.Ref = ref(d)
	if err := s.b().DeliveryNack(s.ctx, &p); err != nil {
		s.t.Fatalf("DeliveryNack of %s: %v", d.Message.ID, err)
	}
}

func (s *busStore) stats(topic, group string) map[int]storage.GroupPartitionStats {
	s.t.Helper()
	all, err := s.b().GroupStats(s.ctx, topic, group)
	if err != nil {
		s.t.Fatalf("GroupStats(%s/%s): %v", topic, group, err)
	}
	out := make(map[int]storage.GroupPartitionStats)
	for i, st := range all {
		if i > 0 && all[i-1].Partition >= st.Partition {
			s.t.Fatalf("GroupStats not in partition order: %+v", all)
		}
		out[st.Partition] = st
	}
	return out
}

func (s *busStore) deadLetters(topic, group string) []storage.DeadLetter {
	s.t.Helper()
	dls, err := s.b().DeadLetterList(s.ctx, &storage.DeadLetterListParams{Topic: topic, Group: group, Limit: 100})
	if err != nil {
		s.t.Fatalf("DeadLetterList(%s/%s): %v", topic, group, err)
	}
	return dls
}

func (s *busStore) read(topic string, p int, from int64) []storage.Message {
	s.t.Helper()
	ms, err := s.b().MessageRead(s.ctx, &storage.MessageReadParams{Topic: topic, Partition: p, FromPosition: from, Limit: 100})
	if err != nil {
		s.t.Fatalf("MessageRead(%s, %d): %v", topic, p, err)
	}
	return ms
}

func (s *busStore) messageHead(p int) int64 {
	s.t.Helper()
	h, err := s.b().MessageHead(s.ctx, p)
	if err != nil {
		s.t.Fatalf("MessageHead(%d): %v", p, err)
	}
	return h
}

func (s *busStore) sweep(p storage.MessageSweepParams) int {
	s.t.Helper()
	n, err := s.b().MessageSweep(s.ctx, &p)
	if err != nil {
		s.t.Fatalf("MessageSweep(%+v): %v", p, err)
	}
	return n
}

func (s *busStore) deliveriesOf(topic string, p int, pos int64) []string {
	s.t.Helper()
	ds, err := s.b().DeliveriesOf(s.ctx, topic, p, pos)
	if err != nil {
		s.t.Fatalf("DeliveriesOf(%s %d:%d): %v", topic, p, pos, err)
	}
	var groups []string
	for _, d := range ds {
		if d.Topic != topic || d.Partition != p || d.Position != pos {
			s.t.Fatalf("DeliveriesOf(%s %d:%d) returned %+v", topic, p, pos, d)
		}
		groups = append(groups, d.Group)
	}
	slices.Sort(groups)
	return groups
}

func ref(d storage.Delivery) storage.DeliveryRef {
	return storage.DeliveryRef{Topic: d.Topic, Group: d.Group, Partition: d.Partition, Position: d.Position, ClaimToken: d.ClaimToken}
}

// ids returns the message ids of deliveries, sorted.
func ids(ds []storage.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Message.ID
	}
	slices.Sort(out)
	return out
}

func messageIDs(ms []storage.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

func same(got []string, want ...string) bool { return slices.Equal(got, want) }

func exerciseBus(t *testing.T, h Harness) {
	t.Run("TopicsAndGroups", func(t *testing.T) {
		t.Parallel()
		s := openBus(t, h, 2)
		b, ctx := s.b(), s.ctx
		first, created, err := b.TopicPut(ctx, &storage.Topic{Name: "orders", Config: []byte(`{"v":1}`)})
		if err != nil || !created || first.Name != "orders" || string(first.Config) != `{"v":1}` || first.CreatedAt.IsZero() || !first.UpdatedAt.Equal(first.CreatedAt) {
			t.Fatalf("TopicPut = %+v, %t, %v; want a created topic", first, created, err)
		}
		second, created, err := b.TopicPut(ctx, &storage.Topic{Name: "orders", Config: []byte(`{"v":2}`)})
		if err != nil || created || string(second.Config) != `{"v":2}` || !second.CreatedAt.Equal(first.CreatedAt) || second.UpdatedAt.Before(first.UpdatedAt) {
			t.Fatalf("TopicPut again = %+v, %t, %v; want the config replaced, created at %v kept", second, created, err, first.CreatedAt)
		}
		s.topic("audit")
		if got, err := b.TopicGet(ctx, "orders"); err != nil || string(got.Config) != `{"v":2}` || !got.CreatedAt.Equal(first.CreatedAt) {
			t.Fatalf("TopicGet = %+v, %v", got, err)
		}
		_, err = b.TopicGet(ctx, "missing")
		wantErr(t, "TopicGet of a missing topic", err, storage.ErrNotFound)
		if ts, err := b.TopicList(ctx); err != nil || len(ts) != 2 || ts[0].Name != "audit" || ts[1].Name != "orders" {
			t.Fatalf("TopicList = %+v, %v; want audit, orders", ts, err)
		}

		_, _, err = b.GroupCreate(ctx, &storage.GroupCreateParams{Topic: "missing", Name: "g"})
		wantErr(t, "GroupCreate on a missing topic", err, storage.ErrNotFound)
		g := s.group("orders", "billing", storage.StartEnd, time.Time{})
		if g.Topic != "orders" || g.Name != "billing" || string(g.Config) != `{"g":1}` || g.CreatedAt.IsZero() {
			t.Fatalf("GroupCreate = %+v", g)
		}
		again, created, err := b.GroupCreate(ctx, &storage.GroupCreateParams{Topic: "orders", Name: "billing", Config: []byte(`{"g":1}`), Start: storage.StartBeginning})
		if err != nil || created || !again.CreatedAt.Equal(g.CreatedAt) || string(again.Config) != `{"g":1}` {
			t.Fatalf("GroupCreate with the same config = %+v, %t, %v; want the stored group, not created", again, created, err)
		}
		_, _, err = b.GroupCreate(ctx, &storage.GroupCreateParams{Topic: "orders", Name: "billing", Config: []byte(`{"g":2}`)})
		wantErr(t, "GroupCreate with another config", err, storage.ErrGroupExists)
		s.group("orders", "audit", storage.StartEnd, time.Time{})
		s.group("audit", "archive", storage.StartEnd, time.Time{})
		if got, err := b.GroupGet(ctx, "orders", "billing"); err != nil || string(got.Config) != `{"g":1}` || !got.CreatedAt.Equal(g.CreatedAt) {
			t.Fatalf("GroupGet = %+v, %v", got, err)
		}
		_, err = b.GroupGet(ctx, "orders", "missing")
		wantErr(t, "GroupGet of a missing group", err, storage.ErrNotFound)
		groupNames := func(gs []storage.Group) []string {
			var out []string
			for _, g := range gs {
				out = append(out, g.Topic+"/"+g.Name)
			}
			return out
		}
		if gs, err := b.GroupList(ctx, "orders"); err != nil || !same(groupNames(gs), "orders/audit", "orders/billing") {
			t.Fatalf("GroupList(orders) = %v, %v", groupNames(gs), err)
		}
		if gs, err := b.GroupList(ctx, ""); err != nil || !same(groupNames(gs), "audit/archive", "orders/audit", "orders/billing") {
			t.Fatalf("GroupList() = %v, %v", groupNames(gs), err)
		}
		_, err = b.GroupStats(ctx, "orders", "missing")
		wantErr(t, "GroupStats of a missing group", err, storage.ErrNotFound)
		if st := s.stats("orders", "billing"); len(st) != 0 {
			t.Fatalf("GroupStats of an empty group = %+v, want no partitions", st)
		}
		wantErr(t, "GroupDelete of a missing group", b.GroupDelete(ctx, "orders", "missing"), storage.ErrNotFound)
		wantErr(t, "TopicDelete of a missing topic", b.TopicDelete(ctx, "missing"), storage.ErrNotFound)

		invalid := []struct {
			name string
			call func() error
		}{
			{"topic put empty name", func() error { _, _, err := b.TopicPut(ctx, &storage.Topic{}); return err }},
			{"topic put name with a space", func() error { _, _, err := b.TopicPut(ctx, &storage.Topic{Name: "a b"}); return err }},
			{"group create empty name", func() error {
				_, _, err := b.GroupCreate(ctx, &storage.GroupCreateParams{Topic: "orders"})
				return err
			}},
			{"group create bad start", func() error {
				_, _, err := b.GroupCreate(ctx, &storage.GroupCreateParams{Topic: "orders", Name: "x", Start: 9})
				return err
			}},
			{"group create start time without a time", func() error {
				_, _, err := b.GroupCreate(ctx, &storage.GroupCreateParams{Topic: "orders", Name: "x", Start: storage.StartTime})
				return err
			}},
			{"claim limit 0", func() error {
				_, err := b.DeliveryClaim(ctx, &storage.DeliveryClaimParams{Topic: "orders", Group: "billing", Visibility: time.Second, MaxDeliveries: 1})
				return err
			}},
			{"claim no visibility", func() error {
				_, err := b.DeliveryClaim(ctx, &storage.DeliveryClaimParams{Topic: "orders", Group: "billing", Limit: 1, MaxDeliveries: 1})
				return err
			}},
			{"claim max deliveries 0", func() error {
				_, err := b.DeliveryClaim(ctx, &storage.DeliveryClaimParams{Topic: "orders", Group: "billing", Limit: 1, Visibility: time.Second})
				return err
			}},
			{"ack empty token", func() error {
				_, err := b.DeliveryAck(ctx, []storage.DeliveryRef{{Topic: "orders", Group: "billing", Position: 1}})
				return err
			}},
			{"nack negative delay", func() error {
				return b.DeliveryNack(ctx, &storage.DeliveryNackParams{Ref: storage.DeliveryRef{Topic: "orders", Group: "billing", Position: 1, ClaimToken: "t"}, Delay: -time.Second})
			}},
			{"heartbeat bad partition", func() error {
				return b.DeliveryHeartbeat(ctx, storage.DeliveryRef{Topic: "orders", Group: "billing", Partition: 2, Position: 1, ClaimToken: "t"}, time.Second)
			}},
			{"message read limit 0", func() error {
				_, err := b.MessageRead(ctx, &storage.MessageReadParams{Topic: "orders"})
				return err
			}},
			{"message head bad partition", func() error { _, err := b.MessageHead(ctx, 2); return err }},
			{"messages by empty correlation", func() error { _, err := b.MessagesByCorrelation(ctx, "", 1); return err }},
			{"sweep bad partition", func() error {
				_, err := b.MessageSweep(ctx, &storage.MessageSweepParams{Topic: "orders", Partition: -1})
				return err
			}},
			{"dead letter list limit 0", func() error {
				_, err := b.DeadLetterList(ctx, &storage.DeadLetterListParams{Topic: "orders", Group: "billing"})
				return err
			}},
			{"stalled limit 0", func() error { _, err := b.DeliveryStalled(ctx, time.Now(), 0); return err }},
		}
		for _, c := range invalid {
			wantErr(t, c.name, c.call(), storage.ErrInvalid)
		}
	})

	t.Run("PublishPositions", func(t *testing.T) {
		t.Parallel()
		s := openBus(t, h, 2)
		s.topic("a")
		s.topic("b")
		first := s.commit(0, &storage.CommitParams{
			Appends: []storage.StreamAppend{{Stream: "s", ExpectedVersion: storage.NoStream, Events: events("s", 0, 1)}},
			Publishes: []storage.MessageInput{
				{Topic: "a", Key: "k", ID: "m1", CorrelationID: "c", Headers: []byte(`{"h":"1"}`), Payload: []byte("p1")},
				{Topic: "b", ID: "m2", Payload: []byte("p2"), TTL: time.Hour},
				{Topic: "a", ID: "m3", Payload: []byte("p3")},
			},
		})
		if len(first.Events) != 1 || first.Events[0].Position != 1 {
			t.Fatalf("events = %+v, want one at position 1", first.Events)
		}
		if len(first.Messages) != 3 {
			t.Fatalf("messages = %+v, want 3", first.Messages)
		}
		for i, m := range first.Messages {
			if m.Position != int64(i+1) || m.Partition != 0 || !m.PublishedAt.Equal(first.Now) {
				t.Fatalf("message %d = %+v, want partition 0, position %d, published at %v", i, m, i+1, first.Now)
			}
		}
		m1 := first.Messages[0]
		if m1.Topic != "a" || m1.Key != "k" || m1.ID != "m1" || m1.CorrelationID != "c" || string(m1.Headers) != `{"h":"1"}` ||
			string(m1.Payload) != "p1" || m1.Tombstone || !m1.ExpiresAt.IsZero() {
			t.Fatalf("message 1 = %+v", m1)
		}
		if m2 := first.Messages[1]; !m2.ExpiresAt.Equal(first.Now.Add(time.Hour)) {
			t.Fatalf("message 2 expires at %v, want %v", m2.ExpiresAt, first.Now.Add(time.Hour))
		}
		second := s.publish(0, msg("b", "", "m4"), msg("a", "", "m5"))
		if second.Messages[0].Position != 4 || second.Messages[1].Position != 5 {
			t.Fatalf("second commit's positions = %d, %d; want 4, 5", second.Messages[0].Position, second.Messages[1].Position)
		}
		other := s.publish(1, msg("a", "", "m6"))
		if other.Messages[0].Position != 1 || other.Messages[0].Partition != 1 {
			t.Fatalf("first message of partition 1 = %+v, want position 1", other.Messages[0])
		}
		if h0, h1 := s.messageHead(0), s.messageHead(1); h0 != 5 || h1 != 1 {
			t.Fatalf("message heads = %d, %d; want 5, 1", h0, h1)
		}
		if h := s.head(0); h != 1 {
			t.Fatalf("event head of partition 0 = %d, want 1: messages have their own counter", h)
		}
		got := s.read("a", 0, 1)
		if !same(messageIDs(got), "m1", "m3", "m5") {
			t.Fatalf("MessageRead(a, 0, 1) = %v, want m1 m3 m5", messageIDs(got))
		}
		if got[0].Position != 1 || got[0].Key != "k" || got[0].CorrelationID != "c" || string(got[0].Headers) != `{"h":"1"}` ||
			string(got[0].Payload) != "p1" || !got[0].PublishedAt.Equal(first.Now) || !got[0].ExpiresAt.IsZero() {
			t.Fatalf("read m1 = %+v, want it as published", got[0])
		}
		if got := s.read("a", 0, 2); !same(messageIDs(got), "m3", "m5") {
			t.Fatalf("MessageRead(a, 0, 2) = %v, want m3 m5", messageIDs(got))
		}
		if got := s.read("b", 0, 1); !same(messageIDs(got), "m2", "m4") || !got[0].ExpiresAt.Equal(first.Now.Add(time.Hour)) {
			t.Fatalf("MessageRead(b, 0, 1) = %+v, want m2 (with its expiry) and m4", got)
		}
		if got, err := s.b().MessageRead(s.ctx, &storage.MessageReadParams{Topic: "a", Partition: 0, FromPosition: 1, Limit: 2}); err != nil || !same(messageIDs(got), "m1", "m3") {
			t.Fatalf("MessageRead with limit 2 = %v, %v", messageIDs(got), err)
		}
		if got := s.read("a", 1, 1); !same(messageIDs(got), "m6") {
			t.Fatalf("MessageRead(a, 1, 1) = %v, want m6", messageIDs(got))
		}
	})

	t.Run("ConcurrentPublishesGapFree", func(t *testing.T) {
		t.Parallel()
		s := openGroups(t, h, 1, "t", "g")
		const writers, commits = 6, 15
		var (
			mu      sync.Mutex
			written = make(map[int64]string) // position: message id
			failure error
		)
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := range commits {
					// Every third commit fails on a missing topic, in the
					// middle of the others: it must leave no gap.
					topic := "t"
					if i%3 == 2 {
						topic = "missing"
					}
					id := fmt.Sprintf("w%d-%02d", w, i)
					res, err := s.d.Commit(s.ctx, &storage.CommitParams{Partition: 0, Epoch: s.epochs[0],
						Publishes: []storage.MessageInput{msg("t", "", id+"a"), msg(topic, "", id+"b")}})
					mu.Lock()
					switch {
					case topic != "t" && !errors.Is(err, storage.ErrInvalid):
						failure = fmt.Errorf("commit %s to a missing topic: %v, want ErrInvalid", id, err)
					case topic == "t" && err != nil:
						failure = fmt.Errorf("commit %s: %v", id, err)
					case err == nil:
						for _, m := range res.Messages {
							written[m.Position] = m.ID
						}
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if failure != nil {
			t.Fatal(failure)
		}
		want := writers * (commits - commits/3) * 2
		got := s.read("t", 0, 1)
		for len(got) < want {
			more := s.read("t", 0, got[len(got)-1].Position+1)
			if len(more) == 0 {
				break
			}
			got = append(got, more...)
		}
		if len(got) != want || len(written) != want {
			t.Fatalf("%d messages stored, %d returned by commits; want %d", len(got), len(written), want)
		}
		for i, m := range got {
			if m.Position != int64(i+1) || written[m.Position] != m.ID {
				t.Fatalf("message %d = %s at position %d; the commit returned %q for it", i, m.ID, m.Position, written[m.Position])
			}
		}
		if mh := s.messageHead(0); mh != int64(want) {
			t.Fatalf("message head = %d, want %d", mh, want)
		}
		if st := s.stats("t", "g")[0]; st.Pending != want {
			t.Fatalf("pending deliveries = %d, want %d", st.Pending, want)
		}
	})

	t.Run("PublishToMissingTopic", func(t *testing.T) {
		t.Parallel()
		s := openBus(t, h, 1)
		s.topic("a")
		s.group("a", "g", storage.StartEnd, time.Time{})
		_, err := s.tryCommit(0, &storage.CommitParams{
			Appends:   []storage.StreamAppend{{Stream: "s", ExpectedVersion: storage.NoStream, Events: events("s", 0, 1)}},
			Publishes: []storage.MessageInput{msg("a", "", "ok"), msg("nope", "", "bad")},
		})
		wantErr(t, "publish to a missing topic", err, storage.ErrInvalid)
		if h, mh := s.head(0), s.messageHead(0); h != 0 || mh != 0 {
			t.Fatalf("heads after a failed publish = %d, %d; want 0, 0", h, mh)
		}
		if got := s.read("a", 0, 1); len(got) != 0 {
			t.Fatalf("messages after a failed publish = %v, want none", messageIDs(got))
		}
		if got := s.claimIDs("a", "g"); len(got) != 0 {
			t.Fatalf("deliveries after a failed publish = %v, want none", got)
		}
		for _, bad := range []storage.MessageInput{
			{Topic: "", ID: "x"},
			{Topic: "a b", ID: "x"},
			{Topic: "a"},
			{Topic: "a", ID: "x", TTL: -time.Second},
			{Topic: "a", ID: "x", Key: strings.Repeat("k", storage.MaxKeyLength+1)},
		} {
			_, err := s.tryCommit(0, &storage.CommitParams{Publishes: []storage.MessageInput{bad}})
			wantErr(t, fmt.Sprintf("publish of %+v", bad), err, storage.ErrInvalid)
		}
		res := s.publish(0, msg("a", "", "m1"))
		if res.Messages[0].Position != 1 {
			t.Fatalf("position after failed publishes = %d, want 1 (no gap)", res.Messages[0].Position)
		}
	})

	t.Run("FanOutAndBackfill", func(t *testing.T) {
		t.Parallel()
		s := openGroups(t, h, 2, "t")
		s.topic("other")
		s.group("t", "g1", storage.StartEnd, time.Time{})
		s.group("t", "g2", storage.StartEnd, time.Time{})
		s.group("other", "x", storage.StartEnd, time.Time{})
		first := s.publish(0, msg("t", "k", "m1"), msg("t", "k", "m2"))
		s.waitPast(first.Now)
		second := s.publish(1, msg("t", "", "m3"))
		if got := s.deliveriesOf("t", 0, 1); !same(got, "g1", "g2") {
			t.Fatalf("DeliveriesOf(m1) = %v, want g1 g2", got)
		}
		if got := s.claimIDs("other", "x"); len(got) != 0 {
			t.Fatalf("group of another topic got %v", got)
		}

		late := s.group("t", "late", storage.StartEnd, time.Time{})
		begin := s.group("t", "begin", storage.StartBeginning, time.Time{})
		since := s.group("t", "since", storage.StartTime, second.Now)
		if late.CreatedAt.IsZero() || begin.CreatedAt.IsZero() || since.CreatedAt.IsZero() {
			t.Fatal("groups without a creation time")
		}
		if got := s.deliveriesOf("t", 0, 1); !same(got, "begin", "g1", "g2") {
			t.Fatalf("DeliveriesOf(m1) after backfill = %v, want begin g1 g2", got)
		}
		for _, g := range []string{"g1", "g2", "begin"} {
			// m2 waits behind m1, its key's first message.
			if got := s.claimIDs("t", g); !same(got, "m1", "m3") {
				t.Fatalf("claim of %s = %v, want m1 m3", g, got)
			}
		}
		if got := s.claimIDs("t", "late"); len(got) != 0 {
			t.Fatalf("claim of a group started at the end = %v, want nothing", got)
		}
		if got := s.claimIDs("t", "since"); !same(got, "m3") {
			t.Fatalf("claim of a group started at %v = %v, want m3", second.Now, got)
		}
		// A group that exists gets every later message.
		s.publish(0, msg("t", "", "m4"))
		for _, g := range []string{"g1", "g2", "late", "begin", "since"} {
			if got := s.claimIDs("t", g); !same(got, "m4") {
				t.Fatalf("claim of %s after the next publish = %v, want m4", g, got)
			}
		}
	})

	t.Run("KeyOrder", func(t *testing.T) {
		t.Parallel()
		s := openGroups(t, h, 2, "t", "g")
		s.publish(0, msg("t", "k1", "a1"), msg("t", "k1", "a2"), msg("t", "k2", "b1"), msg("t", "", "n1"), msg("t", "", "n2"))
		// The same key in another partition is another key.
		s.publish(1, msg("t", "k1", "c1"))
		res := s.claim("t", "g", 100, longTTL, 10)
		if got := ids(res.Deliveries); !same(got, "a1", "b1", "c1", "n1", "n2") {
			t.Fatalf("first claim = %v, want a1 b1 c1 n1 n2 (a2 waits for a1)", got)
		}
		for _, d := range res.Deliveries {
			if d.Blocked || d.Deliveries != 1 || d.ClaimToken == "" || d.Group != "g" || d.Topic != "t" || d.Key != d.Message.Key ||
				d.Position != d.Message.Position || d.Partition != d.Message.Partition {
				t.Fatalf("claimed delivery = %+v", d)
			}
		}
		byID := make(map[string]storage.Delivery)
		for _, d := range res.Deliveries {
			byID[d.Message.ID] = d
		}
		if st := s.stats("t", "g")[0]; st.Pending != 5 || st.InFlight != 4 || st.Blocked != 1 || st.Position != 0 {
			t.Fatalf("stats of partition 0 = %+v, want 5 pending, 4 in flight, 1 blocked, position 0", st)
		}
		// Acking another key or a keyless message frees nothing of k1.
		s.ack(byID["b1"], byID["n2"])
		if got := s.claimIDs("t", "g"); len(got) != 0 {
			t.Fatalf("claim after acking b1 and n2 = %v, want nothing", got)
		}
		s.ack(byID["a1"])
		if st := s.stats("t", "g")[0]; st.Blocked != 0 || st.Position != 1 {
			t.Fatalf("stats after acking a1 = %+v, want nothing blocked, position 1", st)
		}
		a2 := s.claim("t", "g", 100, longTTL, 10).Deliveries
		if !same(ids(a2), "a2") {
			t.Fatalf("claim after acking a1 = %v, want a2", ids(a2))
		}
		// A nacked delivery keeps its place: a3 waits for a2's redelivery.
		s.publish(0, msg("t", "k1", "a3"))
		s.nack(a2[0], storage.DeliveryNackParams{Delay: shortTTL, History: []byte(`["boom"]`)})
		if got := s.claimIDs("t", "g"); len(got) != 0 {
			t.Fatalf("claim during a2's nack delay = %v, want nothing (a3 waits behind a2)", got)
		}
		if st := s.stats("t", "g")[0]; st.Blocked != 1 || st.InFlight != 1 {
			t.Fatalf("stats during the nack delay = %+v, want a3 blocked, n1 in flight", st)
		}
		s.waitPast(s.now().Add(shortTTL))
		again := s.claim("t", "g", 100, longTTL, 10).Deliveries
		if !same(ids(again), "a2") || again[0].Deliveries != 2 || string(again[0].History) != `["boom"]` {
			t.Fatalf("claim after the nack delay = %+v, want a2's second delivery with its history", again)
		}
		s.ack(again[0])
		if got := s.claimIDs("t", "g"); !same(got, "a3") {
			t.Fatalf("claim after acking a2 = %v, want a3", got)
		}
	})

	t.Run("ClaimTokens", func(t *testing.T) {
		t.Parallel()
		s := openGroups(t, h, 1, "t", "g")
		b := s.b()
		s.publish(0, msg("t", "k", "m1"), msg("t", "", "m2"))
		first := s.claim("t", "g", 1, shortTTL, 10).Deliveries
		if !same(ids(first), "m1") {
			t.Fatalf("claim with limit 1 = %v, want m1 (oldest first)", ids(first))
		}
		c := first[0]
		if err := b.DeliveryHeartbeat(s.ctx, ref(c), shortTTL); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
		stale := ref(c)
		stale.ClaimToken = "not-the-token"
		wantErr(t, "heartbeat with a wrong token", b.DeliveryHeartbeat(s.ctx, stale, shortTTL), storage.ErrTaskClaimLost)
		s.waitPast(s.now().Add(shortTTL))
		res := s.claim("t", "g", 10, longTTL, 10)
		var re storage.Delivery
		for _, d := range res.Deliveries {
			if d.Message.ID == "m1" {
				re = d
			}
		}
		if re.Deliveries != 2 || re.ClaimToken == c.ClaimToken || re.ClaimToken == "" {
			t.Fatalf("claim after the visibility expired = %+v, want m1 delivered a second time with a new token", res.Deliveries)
		}
		wantErr(t, "heartbeat with the stale token", b.DeliveryHeartbeat(s.ctx, ref(c), longTTL), storage.ErrTaskClaimLost)
		err := b.DeliveryNack(s.ctx, &storage.DeliveryNackParams{Ref: ref(c)})
		wantErr(t, "nack with the stale token", err, storage.ErrTaskClaimLost)
		err = b.DeliveryNack(s.ctx, &storage.DeliveryNackParams{Ref: ref(c), DeadLetter: true, Reason: "x"})
		wantErr(t, "dead-letter nack with the stale token", err, storage.ErrTaskClaimLost)
		errs, err := b.DeliveryAck(s.ctx, []storage.DeliveryRef{ref(c), ref(re)})
		if err != nil || len(errs) != 2 || !errors.Is(errs[0], storage.ErrTaskClaimLost) || errs[1] != nil {
			t.Fatalf("ack of the stale and the current claim = %v, %v; want [claim lost, nil]", errs, err)
		}
		errs, err = b.DeliveryAck(s.ctx, []storage.DeliveryRef{ref(re)})
		if err != nil || len(errs) != 1 || !errors.Is(errs[0], storage.ErrTaskClaimLost) {
			t.Fatalf("second ack = %v, %v; want claim lost", errs, err)
		}
		if got := s.deliveriesOf("t", 0, 1); len(got) != 0 {
			t.Fatalf("deliveries of the acked m1 = %v, want none", got)
		}
		// A nack ends the claim: its token stops working.
		var m2 storage.Delivery
		for _, d := range res.Deliveries {
			if d.Message.ID == "m2" {
				m2 = d
			}
		}
		s.nack(m2, storage.DeliveryNackParams{})
		wantErr(t, "heartbeat after a nack", b.DeliveryHeartbeat(s.ctx, ref(m2), longTTL), storage.ErrTaskClaimLost)
		if got := s.claim("t", "g", 10, longTTL, 10).Deliveries; !same(ids(got), "m2") || got[0].Deliveries != 2 {
			t.Fatalf("claim after a nack without delay = %+v, want m2 again", got)
		}
	})

	t.Run("ClaimOrderAndHeartbeat", func(t *testing.T) {
		t.Parallel()
		s := openGroups(t, h, 2, "t", "g")
		first := s.publish(1, msg("t", "", "b1"))
		s.waitPast(first.Now)
		s.publish(0, msg("t", "", "a1"), msg("t", "", "a2"))
		var order []string
		for range 3 {
			c := s.claim("t", "g", 1, shortTTL, 10).Deliveries
			if len(c) != 1 {
				t.Fatalf("claim %d = %+v, want one delivery", len(order), c)
			}
			order = append(order, c[0].Message.ID)
			if c[0].Message.ID == "b1" {
				if err := s.b().DeliveryHeartbeat(s.ctx, ref(c[0]), longTTL); err != nil {
					t.Fatalf("heartbeat: %v", err)
				}
			}
			if len(order) == 3 {
				s.waitPast(c[0].VisibleAt)
			}
		}
		if !slices.Equal(order, []string{"b1", "a1", "a2"}) {
			t.Fatalf("claim order = %v, want b1 (visible first), then a1 and a2 by position", order)
		}
		// The claims of a1 and a2 expired; b1's heartbeat outlives them.
		if got := s.claimIDs("t", "g"); !same(got, "a1", "a2") {
			t.Fatalf("claim after the claims expired = %v, want a1 a2 (b1 is heartbeaten)", got)
		}
	})

	t.Run("MaxDeliveries", func(t *testing.T) {
		t.Parallel()
		s := openGroups(t, h, 1, "t", "g")
		pub := s.publish(0, storage.MessageInput{Topic: "t", Key: "k", ID: "poison", CorrelationID: "c", Headers: []byte(`{"a":"b"}`), Payload: []byte("bad")},
			msg("t", "k", "next"))
		const max = 3
		for i := 1; i <= max; i++ {
			res := s.claim("t", "g", 10, shortTTL, max)
			if res.DeadLettered != 0 || !same(ids(res.Deliveries), "poison") || res.Deliveries[0].Deliveries != i {
				t.Fatalf("claim %d = %+v, want the poison message, delivery %d", i, res, i)
			}
			if i == 1 {
				s.nack(res.Deliveries[0], storage.DeliveryNackParams{History: []byte(`["first"]`)})
				continue
			}
			s.waitPast(res.Deliveries[0].VisibleAt)
		}
		res := s.claim("t", "g", 10, longTTL, max)
		if res.DeadLettered != 1 || res.Expired != 0 {
			t.Fatalf("claim after %d deliveries = %+v, want the poison message dead-lettered", max, res)
		}
		// The next message of the key is free: in this claim or the next.
		got := ids(res.Deliveries)
		if len(got) == 0 {
			got = s.claimIDs("t", "g")
		}
		if !same(got, "next") {
			t.Fatalf("deliveries after the dead letter = %v, want next", got)
		}
		dls := s.deadLetters("t", "g")
		if len(dls) != 1 {
			t.Fatalf("dead letters = %+v, want 1", dls)
		}
		dl := dls[0]
		want := pub.Messages[0]
		if dl.ID <= 0 || dl.Topic != "t" || dl.Group != "g" || dl.Partition != 0 || dl.Position != want.Position || dl.Deliveries != max ||
			!strings.Contains(dl.Reason, "max deliveries") || !strings.Contains(dl.Reason, fmt.Sprint(max)) ||
			string(dl.History) != `["first"]` || dl.DeadAt.Before(pub.Now) {
			t.Fatalf("dead letter = %+v", dl)
		}
		m := dl.Message
		if m.Topic != "t" || m.Partition != 0 || m.Position != want.Position || m.Key != "k" || m.ID != "poison" || m.CorrelationID != "c" ||
			string(m.Headers) != `{"a":"b"}` || string(m.Payload) != "bad" || !m.PublishedAt.Equal(pub.Now) || !m.ExpiresAt.IsZero() {
			t.Fatalf("dead letter's message = %+v, want a copy of %+v", m, want)
		}
		if st := s.stats("t", "g")[0]; st.DeadLetters != 1 || st.Pending != 1 || st.Position != 1 {
			t.Fatalf("stats = %+v, want 1 dead letter, 1 pending, position 1", st)
		}
	})

	t.Run("ReplayKeepsHistory", func(t *testing.T) {
		t.Parallel()
		s := openGroups(t, h, 1, "t", "g")
		s.publish(0, msg("t", "k", "poison"))
		const max = 2
		hist := []string{`["h1"]`, `["h1","h2"]`, `["h1","h2","h3"]`, `["h1","h2","h3","h4"]`}
		claimNack := func(want, before int) {
			t.Helper()
			res := s.claim("t", "g", 10, longTTL, max)
			if !same(ids(res.Deliveries), "poison") || res.Deliveries[0].Deliveries != want || res.Deliveries[0].DeliveredBefore != before {
				t.Fatalf("claim = %+v, want poison at delivery %d (%d before the replay)", res, want, before)
			}
			if want > 1 && string(res.Deliveries[0].History) != hist[want-2] {
				t.Fatalf("delivery %d history = %s, want %s", want, res.Deliveries[0].History, hist[want-2])
			}
			s.nack(res.Deliveries[0], storage.DeliveryNackParams{History: []byte(hist[want-1])})
		}
		claimNack(1, 0)
		claimNack(2, 0)
		if res := s.claim("t", "g", 10, longTTL, max); res.DeadLettered != 1 {
			t.Fatalf("claim after %d deliveries = %+v, want a dead letter", max, res)
		}
		if n, err := s.b().DeadLetterReplay(s.ctx, "t", "g", nil); err != nil || n != 1 {
			t.Fatalf("replay = %d, %v", n, err)
		}
		// The count and history go on; the budget starts over.
		claimNack(3, 2)
		claimNack(4, 2)
		if res := s.claim("t", "g", 10, longTTL, max); res.DeadLettered != 1 {
			t.Fatalf("claim after the replay's %d deliveries = %+v, want a dead letter", max, res)
		}
		dls := s.deadLetters("t", "g")
		if len(dls) != 1 || dls[0].Deliveries != 4 || string(dls[0].History) != hist[3] {
			t.Fatalf("dead letters = %+v, want poison after 4 deliveries with its whole history", dls)
		}
	})

	t.Run("NackToDeadLetter", func(t *testing.T) {
		t.Parallel()
		s := openGroups(t, h, 1, "t", "g")
		s.publish(0, msg("t", "k", "m1"), msg("t", "k", "m2"))
		c := s.claim("t", "g", 10, longTTL, 10).Deliveries
		if !same(ids(c), "m1") {
			t.Fatalf("claim = %v, want m1", ids(c))
		}
		s.nack(c[0], storage.DeliveryNackParams{DeadLetter: true, Reason: "unparseable", History: []byte(`["h"]`)})
		dls := s.deadLetters("t", "g")
		if len(dls) != 1 || dls[0].Reason != "unparseable" || dls[0].Deliveries != 1 || string(dls[0].History) != `["h"]` || dls[0].Message.ID != "m1" {
			t.Fatalf("dead letters = %+v, want m1 with its reason and history", dls)
		}
		if got := s.claimIDs("t", "g"); !same(got, "m2") {
			t.Fatalf("claim after the dead letter = %v, want m2", got)
		}
	})

	t.Run("TTL", func(t *testing.T) {
		t.Parallel()
		s := openGroups(t, h, 1, "t", "g")
		res := s.publish(0,
			storage.MessageInput{Topic: "t", Key: "k", ID: "short", TTL: shortTTL},
			msg("t", "k", "after"),
			storage.MessageInput{Topic: "t", ID: "keyless", TTL: shortTTL},
			storage.MessageInput{Topic: "t", ID: "long", TTL: longTTL},
		)
		if !res.Messages[0].ExpiresAt.Equal(res.Now.Add(shortTTL)) {
			t.Fatalf("expires at %v, want %v", res.Messages[0].ExpiresAt, res.Now.Add(shortTTL))
		}
		s.waitPast(res.Messages[0].ExpiresAt)
		c := s.claim("t", "g", 10, longTTL, 10)
		got := ids(c.Deliveries)
		if c.Expired != 2 || slices.Contains(got, "short") || slices.Contains(got, "keyless") || !slices.Contains(got, "long") {
			t.Fatalf("claim after expiry = %v, expired %d; want 2 expired, long claimed", got, c.Expired)
		}
		if !slices.Contains(got, "after") {
			got = append(got, s.claimIDs("t", "g")...)
		}
		if !slices.Contains(got, "after") {
			t.Fatalf("the message after an expired one of its key was not claimable: %v", got)
		}
		if dls := s.deadLetters("t", "g"); len(dls) != 0 {
			t.Fatalf("expired messages were dead-lettered: %+v", dls)
		}
	})

	t.Run("ReplayAndPurge", func(t *testing.T) {
		t.Parallel()
		s := openGroups(t, h, 1, "t", "g", "other")
		b := s.b()
		s.publish(0, msg("t", "k", "k1"), msg("t", "k", "k2"), msg("t", "", "x1"), msg("t", "", "x2"))
		c := s.claim("t", "g", 10, longTTL, 10).Deliveries
		if !same(ids(c), "k1", "x1", "x2") {
			t.Fatalf("claim = %v", ids(c))
		}
		for _, d := range c {
			s.nack(d, storage.DeliveryNackParams{DeadLetter: true, Reason: "r"})
		}
		k2 := s.claim("t", "g", 10, longTTL, 10).Deliveries
		if !same(ids(k2), "k2") {
			t.Fatalf("claim after the dead letters = %v, want k2", ids(k2))
		}
		dls := s.deadLetters("t", "g")
		if len(dls) != 3 || dls[0].ID >= dls[1].ID || dls[1].ID >= dls[2].ID {
			t.Fatalf("dead letters = %+v, want 3 in id order", dls)
		}
		idOf := make(map[string]int64)
		for _, dl := range dls {
			idOf[dl.Message.ID] = dl.ID
		}
		if page, err := b.DeadLetterList(s.ctx, &storage.DeadLetterListParams{Topic: "t", Group: "g", AfterID: dls[0].ID, Limit: 1}); err != nil ||
			len(page) != 1 || page[0].ID != dls[1].ID {
			t.Fatalf("DeadLetterList after %d = %+v, %v", dls[0].ID, page, err)
		}
		if got := s.deadLetters("t", "other"); len(got) != 0 {
			t.Fatalf("dead letters of another group = %+v", got)
		}

		// k1 replayed while k2 of its key is claimed: it waits for k2.
		n, err := b.DeadLetterReplay(s.ctx, "t", "g", []int64{idOf["k1"]})
		if err != nil || n != 1 {
			t.Fatalf("replay of k1 = %d, %v; want 1", n, err)
		}
		if st := s.stats("t", "g")[0]; st.Blocked != 1 || st.DeadLetters != 2 {
			t.Fatalf("stats after replaying k1 = %+v, want k1 blocked, 2 dead letters", st)
		}
		if got := s.claimIDs("t", "g"); len(got) != 0 {
			t.Fatalf("claim while k2 is claimed = %v, want nothing", got)
		}
		s.ack(k2[0])
		k1 := s.claim("t", "g", 10, longTTL, 10).Deliveries
		if !same(ids(k1), "k1") || k1[0].Deliveries != 2 || k1[0].DeliveredBefore != 1 {
			t.Fatalf("claim after acking k2 = %+v, want k1 delivered again (count 2, 1 before the replay)", k1)
		}

		// Replay all; then dead-letter them again and purge.
		n, err = b.DeadLetterReplay(s.ctx, "t", "g", nil)
		if err != nil || n != 2 {
			t.Fatalf("replay of all = %d, %v; want 2", n, err)
		}
		if got := s.deadLetters("t", "g"); len(got) != 0 {
			t.Fatalf("dead letters after replaying all = %+v", got)
		}
		xs := s.claim("t", "g", 10, longTTL, 10).Deliveries
		if !same(ids(xs), "x1", "x2") {
			t.Fatalf("claim after replaying all = %v, want x1 x2", ids(xs))
		}
		for _, d := range xs {
			s.nack(d, storage.DeliveryNackParams{DeadLetter: true, Reason: "again"})
		}
		dls = s.deadLetters("t", "g")
		if len(dls) != 2 || dls[0].ID <= idOf["x2"] {
			t.Fatalf("dead letters = %+v, want 2 with new ids", dls)
		}
		if n, err := b.DeadLetterPurge(s.ctx, "t", "g", []int64{dls[0].ID}); err != nil || n != 1 {
			t.Fatalf("purge of one = %d, %v", n, err)
		}
		if n, err := b.DeadLetterPurge(s.ctx, "t", "g", nil); err != nil || n != 1 {
			t.Fatalf("purge of all = %d, %v", n, err)
		}
		if got := s.deadLetters("t", "g"); len(got) != 0 {
			t.Fatalf("dead letters after purge = %+v", got)
		}

		// A dead letter whose message was swept stays, and is not counted.
		s.publish(0, msg("t", "", "gone"))
		g := s.claim("t", "g", 10, longTTL, 10).Deliveries
		s.nack(g[0], storage.DeliveryNackParams{DeadLetter: true, Reason: "r"})
		if n := s.sweep(storage.MessageSweepParams{Topic: "t", Partition: 0, PublishedBefore: s.now().Add(time.Hour)}); n != 5 {
			t.Fatalf("sweep deleted %d messages, want 5", n)
		}
		if n, err := b.DeadLetterReplay(s.ctx, "t", "g", nil); err != nil || n != 0 {
			t.Fatalf("replay of a dead letter whose message is gone = %d, %v; want 0", n, err)
		}
		if got := s.deadLetters("t", "g"); len(got) != 1 || got[0].Message.ID != "gone" || string(got[0].Message.Payload) != "payload gone" {
			t.Fatalf("dead letters after the sweep = %+v, want the copy of gone", got)
		}
	})

	t.Run("Stats", func(t *testing.T) {
		t.Parallel()
		s := openGroups(t, h, 3, "t")
		s.topic("u")
		s.group("t", "g", storage.StartEnd, time.Time{})
		s.publish(1, msg("u", "", "u1")) // another topic moves the counter
		pub := s.publish(1, msg("t", "k", "a"), msg("t", "k", "b"), msg("t", "", "c"))
		s.publish(2, msg("t", "", "d"))
		c := s.claim("t", "g", 10, longTTL, 10).Deliveries
		st := s.stats("t", "g")
		if len(st) != 2 {
			t.Fatalf("stats = %+v, want partitions 1 and 2 only", st)
		}
		p1 := st[1]
		if p1.Pending != 3 || p1.InFlight != 2 || p1.Blocked != 1 || p1.Position != 1 || p1.DeadLetters != 0 || p1.OldestAge <= 0 {
			t.Fatalf("stats of partition 1 = %+v, want 3 pending, 2 in flight, 1 blocked, position 1", p1)
		}
		if age := s.now().Sub(pub.Now); p1.OldestAge > age+time.Second {
			t.Fatalf("oldest age %v, want about %v", p1.OldestAge, age)
		}
		byID := make(map[string]storage.Delivery)
		for _, d := range c {
			byID[d.Message.ID] = d
		}
		s.ack(byID["a"], byID["d"])
		s.nack(byID["c"], storage.DeliveryNackParams{DeadLetter: true, Reason: "r"})
		st = s.stats("t", "g")
		if p1 := st[1]; p1.Pending != 1 || p1.InFlight != 0 || p1.Blocked != 0 || p1.Position != 2 || p1.DeadLetters != 1 {
			t.Fatalf("stats of partition 1 = %+v, want b pending, position 2, 1 dead letter", p1)
		}
		if p2, ok := st[2]; ok {
			t.Fatalf("stats list partition 2 with nothing in it: %+v", p2)
		}
		b := s.claim("t", "g", 10, longTTL, 10).Deliveries
		s.ack(b...)
		if p1 := s.stats("t", "g")[1]; p1.Pending != 0 || p1.Position != 4 || p1.DeadLetters != 1 || p1.OldestAge != 0 {
			t.Fatalf("stats of partition 1 with nothing outstanding = %+v, want position 4 (the message head)", p1)
		}
	})

	t.Run("BacklogsAndDue", func(t *testing.T) {
		t.Parallel()
		s := openGroups(t, h, 3, "t", "g", "h", "idle")
		s.topic("u")
		s.group("u", "z", storage.StartEnd, time.Time{})
		due := func() []string {
			t.Helper()
			ks, err := s.b().GroupsDue(s.ctx)
			if err != nil {
				t.Fatalf("GroupsDue: %v", err)
			}
			var out []string
			for _, k := range ks {
				out = append(out, k.Topic+"/"+k.Name)
			}
			return out
		}
		backlogs := func() map[string]storage.GroupBacklog {
			t.Helper()
			bs, err := s.b().GroupBacklogs(s.ctx)
			if err != nil {
				t.Fatalf("GroupBacklogs: %v", err)
			}
			out := map[string]storage.GroupBacklog{}
			var names []string
			for _, b := range bs {
				out[b.Topic+"/"+b.Name] = b
				names = append(names, b.Topic+"/"+b.Name)
			}
			if !same(names, "t/g", "t/h", "t/idle", "u/z") {
				t.Fatalf("GroupBacklogs lists %v, want every group in (topic, name) order", names)
			}
			return out
		}
		if got := due(); len(got) != 0 {
			t.Fatalf("GroupsDue with nothing published = %v", got)
		}
		if b := backlogs()["t/g"]; b.Pending != 0 || b.OldestAge != 0 || b.DeadLetters != 0 {
			t.Fatalf("backlog of an empty group = %+v", b)
		}
		s.publish(1, msg("t", "k", "a"), msg("t", "k", "b"))
		s.publish(2, msg("t", "", "c"))
		if got := due(); !same(got, "t/g", "t/h", "t/idle") {
			t.Fatalf("GroupsDue after a publish = %v, want every group of t", got)
		}
		// g: claim everything (a and c; b waits behind a), dead-letter c.
		c := s.claim("t", "g", 10, longTTL, 10).Deliveries
		if len(c) != 2 {
			t.Fatalf("claimed %v, want a and c", ids(c))
		}
		for _, d := range c {
			if d.Message.ID == "c" {
				s.nack(d, storage.DeliveryNackParams{DeadLetter: true, Reason: "r"})
			}
		}
		// h: take everything and ack it.
		s.ack(s.claim("t", "h", 10, longTTL, 10).Deliveries...)
		s.ack(s.claim("t", "h", 10, longTTL, 10).Deliveries...)
		// idle: claimed, then given back with a delay.
		var later time.Time
		for _, d := range s.claim("t", "idle", 10, longTTL, 10).Deliveries {
			s.nack(d, storage.DeliveryNackParams{Delay: 300 * time.Millisecond})
			later = s.now().Add(300 * time.Millisecond)
		}
		if got := due(); len(got) != 0 {
			t.Fatalf("GroupsDue with every delivery claimed, blocked, acked or delayed = %v", got)
		}
		bs := backlogs()
		if g := bs["t/g"]; g.Pending != 2 || g.DeadLetters != 1 || g.OldestAge <= 0 {
			t.Fatalf("backlog of g = %+v, want a and b pending, c dead", g)
		}
		if h := bs["t/h"]; h.Pending != 0 || h.DeadLetters != 0 || h.OldestAge != 0 {
			t.Fatalf("backlog of h = %+v, want nothing", h)
		}
		if i := bs["t/idle"]; i.Pending != 3 || i.DeadLetters != 0 {
			t.Fatalf("backlog of idle = %+v, want 3 pending", i)
		}
		s.waitPast(later)
		if got := due(); !same(got, "t/idle") {
			t.Fatalf("GroupsDue once the nack delay passed = %v, want t/idle", got)
		}
	})

	t.Run("Correlation", func(t *testing.T) {
		t.Parallel()
		s := openBus(t, h, 2)
		s.topic("a")
		s.topic("b")
		corr := func(topic, id, c string) storage.MessageInput {
			return storage.MessageInput{Topic: topic, ID: id, CorrelationID: c}
		}
		s.publish(1, corr("a", "m1", "c1"), corr("b", "m2", "c2"))
		s.publish(0, corr("b", "m3", "c1"))
		s.publish(1, corr("a", "m4", "c1"), corr("a", "m5", ""))
		got, err := s.b().MessagesByCorrelation(s.ctx, "c1", 10)
		if err != nil || !same(messageIDs(got), "m1", "m3", "m4") {
			t.Fatalf("MessagesByCorrelation(c1) = %v, %v; want m1 m3 m4", messageIDs(got), err)
		}
		if got[1].Topic != "b" || got[1].Partition != 0 || got[1].CorrelationID != "c1" {
			t.Fatalf("m3 = %+v", got[1])
		}
		if got, err := s.b().MessagesByCorrelation(s.ctx, "c1", 2); err != nil || !same(messageIDs(got), "m1", "m3") {
			t.Fatalf("MessagesByCorrelation(c1, 2) = %v, %v", messageIDs(got), err)
		}
		if got, err := s.b().MessagesByCorrelation(s.ctx, "none", 10); err != nil || len(got) != 0 {
			t.Fatalf("MessagesByCorrelation(none) = %v, %v", messageIDs(got), err)
		}
	})

	t.Run("SweepAge", func(t *testing.T) {
		t.Parallel()
		s := openGroups(t, h, 1, "t")
		s.topic("other")
		s.group("t", "g", storage.StartEnd, time.Time{})
		s.group("t", "h", storage.StartEnd, time.Time{})
		first := s.publish(0, msg("t", "k", "m1"), msg("t", "k", "m2"), msg("other", "", "o1"))
		s.waitPast(first.Now)
		second := s.publish(0, msg("t", "k", "m3"))
		c := s.claim("t", "g", 10, longTTL, 10).Deliveries
		if !same(ids(c), "m1") {
			t.Fatalf("claim = %v, want m1", ids(c))
		}
		if n := s.sweep(storage.MessageSweepParams{Topic: "t", Partition: 0, PublishedBefore: second.Now}); n != 2 {
			t.Fatalf("sweep deleted %d, want 2", n)
		}
		if got := s.read("t", 0, 1); !same(messageIDs(got), "m3") {
			t.Fatalf("messages after the sweep = %v, want m3", messageIDs(got))
		}
		if got := s.read("other", 0, 1); !same(messageIDs(got), "o1") {
			t.Fatalf("messages of another topic after the sweep = %v, want o1", messageIDs(got))
		}
		if got := s.deliveriesOf("t", 0, 1); len(got) != 0 {
			t.Fatalf("deliveries of a swept message = %v", got)
		}
		wantErr(t, "heartbeat of a swept delivery", s.b().DeliveryHeartbeat(s.ctx, ref(c[0]), longTTL), storage.ErrTaskClaimLost)
		for _, g := range []string{"g", "h"} {
			if got := s.claimIDs("t", g); !same(got, "m3") {
				t.Fatalf("claim of %s after the sweep = %v, want m3 (unblocked)", g, got)
			}
		}
		if mh := s.messageHead(0); mh != 4 {
			t.Fatalf("message head after the sweep = %d, want 4", mh)
		}
		if res := s.publish(0, msg("t", "", "m5")); res.Messages[0].Position != 5 {
			t.Fatalf("position after the sweep = %d, want 5", res.Messages[0].Position)
		}
	})

	t.Run("SweepSizeAndLimit", func(t *testing.T) {
		t.Parallel()
		s := openGroups(t, h, 1, "t")
		ten := func(id string) storage.MessageInput {
			return storage.MessageInput{Topic: "t", ID: id, Payload: []byte("0123456789")}
		}
		s.publish(0, ten("m1"), ten("m2"), ten("m3"), ten("m4"))
		if n := s.sweep(storage.MessageSweepParams{Topic: "t", Partition: 0, MaxBytes: 25, Limit: 1}); n != 1 {
			t.Fatalf("sweep with limit 1 deleted %d, want 1", n)
		}
		if got := s.read("t", 0, 1); !same(messageIDs(got), "m2", "m3", "m4") {
			t.Fatalf("messages after the limited sweep = %v, want m2 m3 m4", messageIDs(got))
		}
		if n := s.sweep(storage.MessageSweepParams{Topic: "t", Partition: 0, MaxBytes: 25}); n != 1 {
			t.Fatalf("sweep to 25 bytes deleted %d, want 1", n)
		}
		if got := s.read("t", 0, 1); !same(messageIDs(got), "m3", "m4") {
			t.Fatalf("messages after the size sweep = %v, want m3 m4", messageIDs(got))
		}
		if n := s.sweep(storage.MessageSweepParams{Topic: "t", Partition: 0, MaxBytes: 20}); n != 0 {
			t.Fatalf("sweep of what fits deleted %d, want 0", n)
		}
		if n := s.sweep(storage.MessageSweepParams{Topic: "t", Partition: 0}); n != 0 {
			t.Fatalf("sweep without rules deleted %d, want 0", n)
		}
	})

	t.Run("SweepCompact", func(t *testing.T) {
		t.Parallel()
		s := openGroups(t, h, 1, "t", "g")
		s.publish(0, msg("t", "k1", "a"), msg("t", "k2", "b"), msg("t", "k1", "c"), msg("t", "", "n1"), msg("t", "", "n2"),
			storage.MessageInput{Topic: "t", Key: "k2", ID: "t2", Tombstone: true})
		if n := s.sweep(storage.MessageSweepParams{Topic: "t", Partition: 0, Compact: true}); n != 2 {
			t.Fatalf("compaction deleted %d, want 2 (a and b)", n)
		}
		got := s.read("t", 0, 1)
		if !same(messageIDs(got), "c", "n1", "n2", "t2") || !got[3].Tombstone {
			t.Fatalf("messages after compaction = %+v, want c n1 n2 and the tombstone t2", got)
		}
		// The newest of each key is now the first in line.
		if got := s.claimIDs("t", "g"); !same(got, "c", "n1", "n2", "t2") {
			t.Fatalf("claim after compaction = %v, want c n1 n2 t2", got)
		}
		if n := s.sweep(storage.MessageSweepParams{Topic: "t", Partition: 0, Compact: true, TombstonesBefore: s.now().Add(-time.Hour)}); n != 0 {
			t.Fatalf("sweep of tombstones older than an hour deleted %d, want 0", n)
		}
		if n := s.sweep(storage.MessageSweepParams{Topic: "t", Partition: 0, Compact: true, TombstonesBefore: s.now().Add(time.Hour)}); n != 1 {
			t.Fatalf("sweep of tombstones deleted %d, want 1", n)
		}
		if got := s.read("t", 0, 1); !same(messageIDs(got), "c", "n1", "n2") {
			t.Fatalf("messages after the tombstone sweep = %v, want c n1 n2", messageIDs(got))
		}
	})

	t.Run("DeleteCascades", func(t *testing.T) {
		t.Parallel()
		s := openGroups(t, h, 1, "t")
		b := s.b()
		s.topic("keep")
		s.group("t", "g", storage.StartEnd, time.Time{})
		s.group("t", "h", storage.StartEnd, time.Time{})
		s.group("keep", "g", storage.StartEnd, time.Time{})
		s.publish(0, msg("t", "", "m1"), msg("t", "", "m2"), msg("keep", "", "k1"))
		c := s.claim("t", "g", 1, longTTL, 10).Deliveries
		s.nack(c[0], storage.DeliveryNackParams{DeadLetter: true, Reason: "r"})
		if err := b.GroupDelete(s.ctx, "t", "g"); err != nil {
			t.Fatalf("GroupDelete: %v", err)
		}
		_, err := b.GroupGet(s.ctx, "t", "g")
		wantErr(t, "GroupGet of a deleted group", err, storage.ErrNotFound)
		if got := s.deliveriesOf("t", 0, 2); !same(got, "h") {
			t.Fatalf("deliveries after GroupDelete = %v, want h only", got)
		}
		s.group("t", "g", storage.StartEnd, time.Time{})
		if got := s.deadLetters("t", "g"); len(got) != 0 {
			t.Fatalf("dead letters of a re-created group = %+v", got)
		}
		if got := s.claimIDs("t", "g"); len(got) != 0 {
			t.Fatalf("deliveries of a re-created group = %v", got)
		}

		hc := s.claim("t", "h", 1, longTTL, 10).Deliveries
		s.nack(hc[0], storage.DeliveryNackParams{DeadLetter: true, Reason: "r"})
		if err := b.TopicDelete(s.ctx, "t"); err != nil {
			t.Fatalf("TopicDelete: %v", err)
		}
		_, err = b.TopicGet(s.ctx, "t")
		wantErr(t, "TopicGet of a deleted topic", err, storage.ErrNotFound)
		if gs, err := b.GroupList(s.ctx, ""); err != nil || len(gs) != 1 || gs[0].Topic != "keep" {
			t.Fatalf("groups after TopicDelete = %+v, %v; want keep/g only", gs, err)
		}
		if got := s.read("t", 0, 1); len(got) != 0 {
			t.Fatalf("messages after TopicDelete = %v", messageIDs(got))
		}
		if got := s.deliveriesOf("t", 0, 2); len(got) != 0 {
			t.Fatalf("deliveries after TopicDelete = %v", got)
		}
		s.topic("t")
		s.group("t", "h", storage.StartBeginning, time.Time{})
		if got := s.claimIDs("t", "h"); len(got) != 0 {
			t.Fatalf("claim of a re-created topic = %v, want nothing", got)
		}
		if got := s.deadLetters("t", "h"); len(got) != 0 {
			t.Fatalf("dead letters of a re-created topic = %+v", got)
		}
		if got := s.claimIDs("keep", "g"); !same(got, "k1") {
			t.Fatalf("claim of the kept topic = %v, want k1", got)
		}
	})

	t.Run("StalledAndDeliveriesOf", func(t *testing.T) {
		t.Parallel()
		s := openGroups(t, h, 2, "t", "g1", "g2")
		b := s.b()
		first := s.publish(1, msg("t", "", "old"))
		s.waitPast(first.Now)
		second := s.publish(0, msg("t", "", "new"))
		stalled, err := b.DeliveryStalled(s.ctx, second.Now, 10)
		if err != nil || len(stalled) != 2 {
			t.Fatalf("DeliveryStalled = %+v, %v; want old's 2 deliveries", stalled, err)
		}
		for _, d := range stalled {
			if d.Message.ID != "old" || d.Partition != 1 || d.Position != 1 || string(d.Message.Payload) != "payload old" || d.Deliveries != 0 || d.ClaimToken != "" {
				t.Fatalf("stalled delivery = %+v", d)
			}
		}
		if got, err := b.DeliveryStalled(s.ctx, second.Now, 1); err != nil || len(got) != 1 {
			t.Fatalf("DeliveryStalled with limit 1 = %+v, %v", got, err)
		}
		all, err := b.DeliveryStalled(s.ctx, second.Now.Add(time.Microsecond), 10)
		if err != nil || len(all) != 4 || all[0].Message.ID != "old" || all[3].Message.ID != "new" {
			t.Fatalf("DeliveryStalled of both = %+v, %v; want old's then new's", all, err)
		}
		s.ack(s.claim("t", "g1", 10, longTTL, 10).Deliveries...)
		if got := s.deliveriesOf("t", 1, 1); !same(got, "g2") {
			t.Fatalf("DeliveriesOf(old) after g1 acked = %v, want g2", got)
		}
		c := s.claim("t", "g2", 1, longTTL, 10).Deliveries
		ds, err := b.DeliveriesOf(s.ctx, "t", 1, 1)
		if err != nil || len(ds) != 1 || ds[0].Group != "g2" || ds[0].Deliveries != 1 || ds[0].ClaimToken != c[0].ClaimToken || !ds[0].VisibleAt.Equal(c[0].VisibleAt) {
			t.Fatalf("DeliveriesOf(old) while claimed = %+v, %v; want g2's claim %+v", ds, err, c)
		}
		if got, err := b.DeliveryStalled(s.ctx, second.Now, 10); err != nil || len(got) != 1 || got[0].Group != "g2" {
			t.Fatalf("DeliveryStalled after g1 acked = %+v, %v; want g2's", got, err)
		}
	})

	t.Run("Reopen", func(t *testing.T) {
		t.Parallel()
		s := openGroups(t, h, 2, "t", "g")
		pub := s.publish(1, msg("t", "k", "m1"), msg("t", "k", "m2"), msg("t", "", "m3"))
		c := s.claim("t", "g", 10, longTTL, 10).Deliveries
		var m3 storage.Delivery
		for _, d := range c {
			if d.Message.ID == "m3" {
				m3 = d
			}
		}
		s.nack(m3, storage.DeliveryNackParams{DeadLetter: true, Reason: "r"})
		before := s.stats("t", "g")

		s.d = h.Reopen(t, s.d)
		if _, err := s.b().TopicGet(s.ctx, "t"); err != nil {
			t.Fatalf("TopicGet after reopen: %v", err)
		}
		if _, err := s.b().GroupGet(s.ctx, "t", "g"); err != nil {
			t.Fatalf("GroupGet after reopen: %v", err)
		}
		got := s.read("t", 1, 1)
		if !same(messageIDs(got), "m1", "m2", "m3") || !got[0].PublishedAt.Equal(pub.Now) {
			t.Fatalf("messages after reopen = %+v", got)
		}
		if mh := s.messageHead(1); mh != 3 {
			t.Fatalf("message head after reopen = %d, want 3", mh)
		}
		after := s.stats("t", "g")
		if b, a := before[1], after[1]; a.Pending != b.Pending || a.InFlight != b.InFlight || a.Blocked != b.Blocked || a.Position != b.Position || a.DeadLetters != b.DeadLetters {
			t.Fatalf("stats after reopen = %+v, want %+v", a, b)
		}
		if dls := s.deadLetters("t", "g"); len(dls) != 1 || dls[0].Message.ID != "m3" {
			t.Fatalf("dead letters after reopen = %+v", dls)
		}
		// The claim survives: its token still acks, and the key's order holds.
		if got := s.claimIDs("t", "g"); len(got) != 0 {
			t.Fatalf("claim after reopen = %v, want nothing (m1 claimed, m2 behind it)", got)
		}
		s.ack(c[0])
		if got := s.claimIDs("t", "g"); !same(got, "m2") {
			t.Fatalf("claim after acking m1 = %v, want m2", got)
		}
		if res := s.publish(1, msg("t", "", "m4")); res.Messages[0].Position != 4 {
			t.Fatalf("position after reopen = %d, want 4", res.Messages[0].Position)
		}
	})

	t.Run("ConcurrentClaimers", func(t *testing.T) {
		t.Parallel()
		s := openGroups(t, h, 2, "t", "g")
		const keys, perKey = 10, 12
		total := 0
		for p := range 2 {
			var in []storage.MessageInput
			for i := range perKey {
				for k := range keys {
					key := ""
					if k > 0 { // key 0 stands for keyless messages
						key = fmt.Sprintf("k%d", k)
					}
					in = append(in, msg("t", key, fmt.Sprintf("p%d-k%d-%02d", p, k, i)))
				}
			}
			total += len(in)
			s.publish(p, in...)
		}
		const claimers = 6
		var (
			mu       sync.Mutex
			seen     = make(map[string]bool)
			inFlight = make(map[string]bool)  // partition/key claimed and not yet acked
			last     = make(map[string]int64) // partition/key: last position claimed
			failure  error
		)
		fail := func(err error) {
			if failure == nil {
				failure = err
			}
		}
		deadline := time.Now().Add(waitLimit)
		var wg sync.WaitGroup
		for range claimers {
			wg.Go(func() {
				for {
					res, err := s.b().DeliveryClaim(s.ctx, &storage.DeliveryClaimParams{Topic: "t", Group: "g", Limit: 5, Visibility: longTTL, MaxDeliveries: 10})
					mu.Lock()
					if err != nil {
						fail(err)
					}
					if err == nil && len(res.Deliveries) == 0 && len(seen) < total && time.Now().After(deadline) {
						fail(fmt.Errorf("%d of %d messages claimed within %v", len(seen), total, waitLimit))
					}
					if err != nil || failure != nil || (len(res.Deliveries) == 0 && len(seen) == total) {
						mu.Unlock()
						return
					}
					if len(res.Deliveries) == 0 {
						// The rest wait behind claims of other claimers.
						mu.Unlock()
						time.Sleep(time.Millisecond)
						continue
					}
					for _, d := range res.Deliveries {
						pk := fmt.Sprintf("%d/%s", d.Partition, d.Key)
						switch {
						case seen[d.Message.ID]:
							fail(fmt.Errorf("%s handed out twice", d.Message.ID))
						case d.Key != "" && inFlight[pk]:
							fail(fmt.Errorf("%s claimed while another message of its key is", d.Message.ID))
						case d.Key != "" && d.Position <= last[pk]:
							fail(fmt.Errorf("%s at position %d claimed after position %d of its key", d.Message.ID, d.Position, last[pk]))
						}
						seen[d.Message.ID] = true
						if d.Key != "" {
							inFlight[pk], last[pk] = true, d.Position
						}
					}
					// Marked acked before the ack: the next of a key can only
					// be claimed once the ack is done.
					for _, d := range res.Deliveries {
						delete(inFlight, fmt.Sprintf("%d/%s", d.Partition, d.Key))
					}
					mu.Unlock()
					refs := make([]storage.DeliveryRef, len(res.Deliveries))
					for i, d := range res.Deliveries {
						refs[i] = ref(d)
					}
					errs, err := s.b().DeliveryAck(s.ctx, refs)
					mu.Lock()
					if err == nil {
						err = errors.Join(errs...)
					}
					if err != nil {
						fail(err)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if failure != nil {
			t.Fatal(failure)
		}
		if len(seen) != total {
			t.Fatalf("claimers got %d distinct messages, want %d", len(seen), total)
		}
	})
}
