// Package bus is Accord's event bus for choreography: topics, consumer
// groups, at-least-once delivery with per-key order, nack with backoff,
// dead letters, TTL, retention and compaction, webhook subscriptions and
// topics that start sagas.
//
// The bus keeps no state of its own: messages, groups, deliveries and dead
// letters live in the store (storage.BusStore), and publishes go through
// the engine's partition loops, so that a message gets its partition
// position in a fenced commit, batched with whatever else the loop
// commits. A message's partition comes from its key (topic and key
// hashed), so messages of one key are ordered; keyless messages go to any
// partition this node runs.
//
// Every group gets its own delivery of each message, created in the same
// transaction as the message (or, for a group created later from the
// beginning or from a time, in the group's). A consumer receives
// deliveries with a claim that lasts the group's ack timeout and acks,
// nacks or heartbeats them by receipt. A delivery that is handed out more
// than the group's max deliveries times — nacked, or claimed by a consumer
// that died — goes to the group's dead letters with its attempt history,
// where it can be inspected, replayed or purged.
//
// Runners inside the server consume groups that push to a webhook or
// start a saga per message; a scan loop starts and stops them as groups
// come and go, measures lag (metrics) and reports flows that stalled.
package bus
