package bus

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

// Delivery is a message handed to a consumer of a group.
type Delivery struct {
	// Receipt names this claim: ack, nack and heartbeat quote it.
	Receipt   string
	Topic     string
	Group     string
	Partition int
	Position  int64
	// Attempt counts the times the message was handed to the group, this
	// one included; a replay from the dead letters does not reset it.
	Attempt int
	History []Attempt
	Message storage.Message
}

// Attempt is one failed delivery in a message's history.
type Attempt struct {
	Attempt int       `json:"attempt"`
	At      time.Time `json:"at,omitzero"`
	// Outcome is "nack" (the consumer said so) or "expired" (no answer
	// before the ack timeout: the consumer died or was too slow).
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
}

// MaxReceive bounds the messages one receive returns.
const MaxReceive = 1000

// MaxWait bounds a receive's long poll.
const MaxWait = time.Minute

// Receive claims up to max messages of a group, waiting up to wait for the
// first when none is ready. Each stays claimed for the group's ack timeout
// (or visibility, if > 0).
func (b *Bus) Receive(ctx context.Context, topic, group string, max int, wait, visibility time.Duration) ([]Delivery, error) {
	if max < 1 || max > MaxReceive {
		return nil, invalid("max", fmt.Sprintf("must be 1..%d", MaxReceive))
	}
	if wait < 0 || wait > MaxWait {
		return nil, invalid("wait", "must be 0..60s")
	}
	if visibility < 0 || visibility > 12*time.Hour {
		return nil, invalid("visibility", "must be 0..12h")
	}
	g, err := b.GetGroup(ctx, topic, group)
	if err != nil {
		return nil, err
	}
	return b.receive(ctx, g, max, wait, visibility)
}

// waitForever, as receive's wait, waits until a message comes, woken by
// local publishes, acks and nacks and by the due loop, without polling the
// store itself (the group runners' receive).
const waitForever time.Duration = -1

func (b *Bus) receive(ctx context.Context, g Group, max int, wait, visibility time.Duration) ([]Delivery, error) {
	if visibility == 0 {
		visibility = time.Duration(g.Effective.AckTimeout)
	}
	deadline := time.Now().Add(wait)
	poll := time.NewTimer(b.cfg.PollInterval)
	defer poll.Stop()
	for {
		sig, stopWaiting := b.wake.wait(g.Topic, g.Name)
		res, err := b.store.DeliveryClaim(ctx, &storage.DeliveryClaimParams{
			Topic: g.Topic, Group: g.Name, Limit: max, Visibility: visibility, MaxDeliveries: g.Effective.MaxDeliveries,
		})
		if err != nil {
			stopWaiting()
			return nil, fmt.Errorf("bus: receive: %w", err)
		}
		b.metrics.claimed(g, res)
		if len(res.Deliveries) > 0 {
			stopWaiting()
			out := make([]Delivery, len(res.Deliveries))
			for i, d := range res.Deliveries {
				out[i] = deliveryFrom(d)
			}
			return out, nil
		}
		var pollC <-chan time.Time // nil: wait for a wakeup only
		if wait != waitForever {
			left := time.Until(deadline)
			if left <= 0 {
				stopWaiting()
				return nil, nil
			}
			poll.Reset(min(b.cfg.PollInterval, left))
			pollC = poll.C
		}
		select {
		case <-sig:
		case <-pollC:
		case <-ctx.Done():
			stopWaiting()
			return nil, ctx.Err()
		}
		stopWaiting()
	}
}

func deliveryFrom(d storage.Delivery) Delivery {
	return Delivery{
		Receipt:   receipt(d.Partition, d.Position, d.ClaimToken),
		Topic:     d.Topic,
		Group:     d.Group,
		Partition: d.Partition,
		Position:  d.Position,
		Attempt:   d.Deliveries,
		History:   historyWithGaps(d.History, d.Deliveries-1),
		Message:   d.Message,
	}
}

// historyWithGaps decodes a stored history and adds an "expired" entry for
// every earlier delivery that ended without a nack (its consumer died or
// timed out), so that the history accounts for every attempt before this
// one.
func historyWithGaps(stored []byte, earlier int) []Attempt {
	var h []Attempt
	if len(stored) > 0 {
		_ = json.Unmarshal(stored, &h) // written by nack; a bad document reads as no history
	}
	seen := map[int]bool{}
	for _, a := range h {
		seen[a.Attempt] = true
	}
	for n := 1; n <= earlier; n++ {
		if !seen[n] {
			h = append(h, Attempt{Attempt: n, Outcome: "expired"})
		}
	}
	slices.SortStableFunc(h, func(x, y Attempt) int { return cmp.Compare(x.Attempt, y.Attempt) })
	return h
}

// receipt encodes a claim as "partition.position.token".
func receipt(partition int, position int64, token string) string {
	return strconv.Itoa(partition) + "." + strconv.FormatInt(position, 10) + "." + token
}

func (b *Bus) parseReceipt(topic, group, s string) (storage.DeliveryRef, error) {
	parts := strings.SplitN(s, ".", 3)
	if len(parts) != 3 || parts[2] == "" || len(s) > 600 {
		return storage.DeliveryRef{}, invalid("receipt", "is not a receipt this server issued")
	}
	part, err1 := strconv.Atoi(parts[0])
	pos, err2 := strconv.ParseInt(parts[1], 10, 64)
	if err1 != nil || err2 != nil || part < 0 || part >= b.parts || pos < 1 {
		return storage.DeliveryRef{}, invalid("receipt", "is not a receipt this server issued")
	}
	return storage.DeliveryRef{Topic: topic, Group: group, Partition: part, Position: pos, ClaimToken: parts[2]}, nil
}

// Ack acknowledges received messages. The result has one entry per
// receipt: nil, or an error (ErrReceiptLost, ErrInvalid).
func (b *Bus) Ack(ctx context.Context, topic, group string, receipts []string) ([]error, error) {
	if len(receipts) == 0 || len(receipts) > MaxReceive {
		return nil, invalid("receipts", fmt.Sprintf("must hold 1..%d receipts", MaxReceive))
	}
	if _, err := b.GetGroup(ctx, topic, group); err != nil {
		return nil, err
	}
	out := make([]error, len(receipts))
	var refs []storage.DeliveryRef
	var at []int
	for i, r := range receipts {
		ref, err := b.parseReceipt(topic, group, r)
		if err != nil {
			out[i] = err
			continue
		}
		refs = append(refs, ref)
		at = append(at, i)
	}
	if len(refs) == 0 {
		return out, nil
	}
	res, err := b.store.DeliveryAck(ctx, refs)
	if err != nil {
		return nil, fmt.Errorf("bus: ack: %w", err)
	}
	acked := 0
	for j, e := range res {
		if errors.Is(e, storage.ErrTaskClaimLost) {
			e = ErrReceiptLost
		}
		out[at[j]] = e
		if e == nil {
			acked++
			b.metrics.acked.WithLabelValues(topic, group).Inc()
		}
	}
	// Each ack may release the next message of its key: wake as many
	// receivers of the group waiting here rather than leave it to their
	// next poll.
	b.wake.some(topic, group, acked)
	return out, nil
}

// Nack says a received message failed. It is handed out again after delay
// (or, if delay is negative, after the group's backoff for its attempt),
// keeping its place before later messages of its key; with deadLetter it
// goes to the group's dead letters at once (a message that can never
// succeed).
func (b *Bus) Nack(ctx context.Context, topic, group, rcpt, reason string, delay time.Duration, deadLetter bool) error {
	if len(reason) > 8192 {
		return invalid("reason", "must be at most 8192 bytes")
	}
	if delay > 12*time.Hour {
		return invalid("delay", "must be at most 12h")
	}
	g, err := b.GetGroup(ctx, topic, group)
	if err != nil {
		return err
	}
	ref, err := b.parseReceipt(topic, group, rcpt)
	if err != nil {
		return err
	}
	// The history is kept with the delivery; read it to add this attempt.
	cur, err := b.outstanding(ctx, ref)
	if err != nil {
		return err
	}
	h := historyWithGaps(cur.History, cur.Deliveries-1)
	now, err := b.store.Now(ctx)
	if err != nil {
		return fmt.Errorf("bus: nack: %w", err)
	}
	h = append(h, Attempt{Attempt: cur.Deliveries, At: now, Outcome: "nack", Reason: reason})
	doc, _ := json.Marshal(h) // plain data: cannot fail
	if delay < 0 {
		// The backoff starts over with a replay's fresh budget.
		delay = backoff(g.Effective.Backoff, cur.Deliveries-cur.DeliveredBefore)
	}
	p := &storage.DeliveryNackParams{Ref: ref, Delay: delay, History: doc, DeadLetter: deadLetter, Reason: reason}
	if deadLetter && reason == "" {
		p.Reason = "dead-lettered by consumer"
	}
	err = b.store.DeliveryNack(ctx, p)
	if errors.Is(err, storage.ErrTaskClaimLost) {
		return ErrReceiptLost
	}
	if err != nil {
		return fmt.Errorf("bus: nack: %w", err)
	}
	if deadLetter {
		b.metrics.deadLettered.WithLabelValues(topic, group).Inc()
		b.wake.some(topic, group, 1) // the next message of its key is released
	} else {
		b.metrics.nacked.WithLabelValues(topic, group).Inc()
		if delay == 0 {
			b.wake.some(topic, group, 1)
		}
	}
	return nil
}

// outstanding finds a claimed delivery by its ref; ErrReceiptLost if it is
// gone or claimed by someone else.
func (b *Bus) outstanding(ctx context.Context, ref storage.DeliveryRef) (storage.Delivery, error) {
	ds, err := b.store.DeliveriesOf(ctx, ref.Topic, ref.Partition, ref.Position)
	if err != nil {
		return storage.Delivery{}, fmt.Errorf("bus: nack: %w", err)
	}
	for _, d := range ds {
		if d.Group == ref.Group {
			if d.ClaimToken != ref.ClaimToken {
				return storage.Delivery{}, ErrReceiptLost
			}
			return d, nil
		}
	}
	return storage.Delivery{}, ErrReceiptLost
}

// backoff is the redelivery delay after a message's attempt-th failure:
// Initial × 2^(attempt−1), at most Max, less up to 20 % jitter.
func backoff(c Backoff, attempt int) time.Duration {
	d := time.Duration(c.Initial)
	for i := 1; i < attempt && d < time.Duration(c.Max); i++ {
		d *= 2
	}
	d = min(d, time.Duration(c.Max))
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

// Heartbeat extends a claim by extend (or the group's ack timeout).
func (b *Bus) Heartbeat(ctx context.Context, topic, group, rcpt string, extend time.Duration) error {
	if extend < 0 || extend > 12*time.Hour {
		return invalid("extend", "must be 0..12h")
	}
	g, err := b.GetGroup(ctx, topic, group)
	if err != nil {
		return err
	}
	ref, err := b.parseReceipt(topic, group, rcpt)
	if err != nil {
		return err
	}
	if extend == 0 {
		extend = time.Duration(g.Effective.AckTimeout)
	}
	err = b.store.DeliveryHeartbeat(ctx, ref, extend)
	if errors.Is(err, storage.ErrTaskClaimLost) {
		return ErrReceiptLost
	}
	if err != nil {
		return fmt.Errorf("bus: heartbeat: %w", err)
	}
	return nil
}

// ---- dead letters

// DeadLetters pages through a group's dead letters.
func (b *Bus) DeadLetters(ctx context.Context, topic, group string, after int64, limit int) ([]storage.DeadLetter, error) {
	if limit < 1 || limit > 1000 {
		return nil, invalid("limit", "must be 1..1000")
	}
	if after < 0 {
		return nil, invalid("after", "must be >= 0")
	}
	if _, err := b.GetGroup(ctx, topic, group); err != nil {
		return nil, err
	}
	dl, err := b.store.DeadLetterList(ctx, &storage.DeadLetterListParams{Topic: topic, Group: group, AfterID: after, Limit: limit})
	if err != nil {
		return nil, fmt.Errorf("bus: list dead letters: %w", err)
	}
	return dl, nil
}

// ReplayDeadLetters gives dead letters back to their group (ids nil: all).
func (b *Bus) ReplayDeadLetters(ctx context.Context, topic, group string, ids []int64) (int, error) {
	n, err := b.deadLetterOp(ctx, topic, group, ids, "replay", b.store.DeadLetterReplay)
	if err == nil {
		b.Notify(topic)
	}
	return n, err
}

// PurgeDeadLetters deletes dead letters (ids nil: all).
func (b *Bus) PurgeDeadLetters(ctx context.Context, topic, group string, ids []int64) (int, error) {
	return b.deadLetterOp(ctx, topic, group, ids, "purge", b.store.DeadLetterPurge)
}

// deadLetterOp checks a replay's or a purge's group and ids and runs it.
func (b *Bus) deadLetterOp(ctx context.Context, topic, group string, ids []int64, verb string,
	op func(ctx context.Context, topic, group string, ids []int64) (int, error)) (int, error) {
	if _, err := b.GetGroup(ctx, topic, group); err != nil {
		return 0, err
	}
	if ids != nil && len(ids) == 0 {
		return 0, invalid("ids", "must not be empty (leave it out to "+verb+" all)")
	}
	n, err := op(ctx, topic, group, ids)
	if err != nil {
		return 0, fmt.Errorf("bus: %s dead letters: %w", verb, err)
	}
	return n, nil
}
