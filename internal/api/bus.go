package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/accord-saga/accord/internal/bus"
	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/ident"
	"github.com/accord-saga/accord/internal/storage"
)

// TopicConfig is a topic's configuration. Durations are Go duration
// strings; absent fields take the defaults (see docs/bus.md).
type TopicConfig struct {
	DefaultTTL         string `json:"default_ttl,omitempty" doc:"Lifetime of a message that gives none (Go duration); absent: messages do not expire."`
	RetentionAge       string `json:"retention_age,omitempty" doc:"Messages older than this are deleted. Default 168h."`
	KeepForever        bool   `json:"keep_forever,omitempty" doc:"Turns age retention off."`
	RetentionBytes     int64  `json:"retention_bytes,omitempty" minimum:"0" doc:"Payload bytes kept per partition, newest first; absent: no size limit."`
	Compact            bool   `json:"compact,omitempty" doc:"Keep only the newest message of each key."`
	TombstoneRetention string `json:"tombstone_retention,omitempty" doc:"How long a compacted topic keeps a tombstone. Default 24h."`
	DedupWindow        string `json:"dedup_window,omitempty" doc:"How long a publish's idempotency key is remembered. Default 1h."`
	MaxDeliveries      int    `json:"max_deliveries,omitempty" minimum:"0" maximum:"1000" doc:"Default max_deliveries of the topic's groups. Default 5."`
}

// Topic is a topic with its configuration.
type Topic struct {
	Name      string      `json:"name"`
	Config    TopicConfig `json:"config" doc:"The configuration as given."`
	Effective TopicConfig `json:"effective" doc:"The configuration with every default filled in."`
	CreatedAt time.Time   `json:"created_at"`
	UpdatedAt time.Time   `json:"updated_at"`
}

// TopicList lists topics by name.
type TopicList struct {
	Topics []Topic `json:"topics"`
}

// BusMessage is a stored message.
type BusMessage struct {
	ID            string            `json:"id"`
	Topic         string            `json:"topic"`
	Key           string            `json:"key,omitempty"`
	CorrelationID string            `json:"correlation_id"`
	Partition     int               `json:"partition"`
	Position      int64             `json:"position" doc:"The message's place in its partition of the topic, from 1."`
	Headers       map[string]string `json:"headers,omitempty"`
	Payload       json.RawMessage   `json:"payload,omitempty"`
	Tombstone     bool              `json:"tombstone,omitempty"`
	PublishedAt   time.Time         `json:"published_at"`
	ExpiresAt     time.Time         `json:"expires_at,omitzero"`
}

// BusMessageList is a page of a topic's messages in one partition.
type BusMessageList struct {
	Messages []BusMessage `json:"messages"`
}

// OutgoingMessage is a message to publish.
type OutgoingMessage struct {
	Key            string            `json:"key,omitempty" maxLength:"256" doc:"Orders the topic's messages: those of one key reach each group one at a time, in publish order."`
	ID             string            `json:"id,omitempty" maxLength:"256" doc:"The message id; default a new unique id."`
	IdempotencyKey string            `json:"idempotency_key,omitempty" maxLength:"256" doc:"A publish repeated with this key within the topic's dedup_window is stored once."`
	CorrelationID  string            `json:"correlation_id,omitempty" maxLength:"256" doc:"Ties the messages of one flow together; default the message's id."`
	Headers        map[string]string `json:"headers,omitempty"`
	Payload        json.RawMessage   `json:"payload,omitempty" doc:"Any JSON value (at most 1 MiB)."`
	Tombstone      bool              `json:"tombstone,omitempty" doc:"Deletes key from a compacted topic; no payload."`
	TTL            string            `json:"ttl,omitempty" doc:"Lifetime of the message (Go duration); default the topic's default_ttl."`
}

// PublishResult is the fate of one published message.
type PublishResult struct {
	ID          string    `json:"id"`
	Partition   int       `json:"partition"`
	Position    int64     `json:"position,omitempty" doc:"Absent for a duplicate."`
	PublishedAt time.Time `json:"published_at,omitzero" doc:"Absent for a duplicate."`
	Duplicate   bool      `json:"duplicate" doc:"The idempotency key named a message published before; id is that message's."`
}

// PublishResults answers a publish, in request order.
type PublishResults struct {
	Results []PublishResult `json:"results"`
}

type topicPathInput struct {
	Topic string `path:"topic" doc:"Topic name: 1..128 characters of [A-Za-z0-9._-]."`
}

type putTopicInput struct {
	Topic string       `path:"topic"`
	Body  *TopicConfig `required:"false"`
}

type topicOutput struct {
	Status int
	Body   *Topic
}

type listTopicsOutput struct {
	Body TopicList
}

type publishInput struct {
	Topic string `path:"topic"`
	Body  struct {
		Messages []OutgoingMessage `json:"messages" minItems:"1" maxItems:"1000"`
	}
}

type publishOutput struct {
	Body PublishResults
}

type readMessagesInput struct {
	Topic     string `path:"topic"`
	Partition int    `query:"partition" minimum:"0" doc:"The partition to read."`
	From      int64  `query:"from" minimum:"0" doc:"The first position to read."`
	Limit     int    `query:"limit" minimum:"1" maximum:"1000" default:"100"`
}

type readMessagesOutput struct {
	Body BusMessageList
}

// registerBus registers the event bus endpoints (docs/bus.md).
func (s *server) registerBus() {
	huma.Register(s.api, s.operation(huma.Operation{
		OperationID:   "putTopic",
		Method:        http.MethodPut,
		Path:          "/v1/topics/{topic}",
		Summary:       "Create a topic or replace its configuration",
		Description:   "201 when created; 200 when the topic existed and its configuration was replaced.",
		Tags:          []string{"Bus"},
		DefaultStatus: http.StatusCreated,
	}, http.StatusBadRequest, http.StatusUnprocessableEntity), s.handlePutTopic)
	alsoRespondPut(s.api, "/v1/topics/{topic}", "The topic existed; its configuration is replaced.")

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "listTopics",
		Method:      http.MethodGet,
		Path:        "/v1/topics",
		Summary:     "List topics",
		Tags:        []string{"Bus"},
	}), s.handleListTopics)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "getTopic",
		Method:      http.MethodGet,
		Path:        "/v1/topics/{topic}",
		Summary:     "Get a topic",
		Tags:        []string{"Bus"},
	}, http.StatusNotFound, http.StatusUnprocessableEntity), s.handleGetTopic)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "deleteTopic",
		Method:      http.MethodDelete,
		Path:        "/v1/topics/{topic}",
		Summary:     "Delete a topic",
		Description: "Deletes the topic with its messages, groups and dead letters.",
		Tags:        []string{"Bus"},
	}, http.StatusNotFound, http.StatusUnprocessableEntity), s.handleDeleteTopic)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "publish",
		Method:      http.MethodPost,
		Path:        "/v1/topics/{topic}/messages",
		Summary:     "Publish messages",
		Description: "Publishes 1..1000 messages and answers once they are durable, with each one's id and position in request order. " +
			"Messages of one partition are written atomically; after an error, publish again with the same idempotency keys. " +
			"409 idempotency-mismatch when a key was used for other content.",
		Tags: []string{"Bus"},
	}, http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusRequestEntityTooLarge,
		http.StatusUnprocessableEntity), s.handlePublish)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "readMessages",
		Method:      http.MethodGet,
		Path:        "/v1/topics/{topic}/messages",
		Summary:     "Read a topic's messages in one partition",
		Tags:        []string{"Bus"},
	}, http.StatusNotFound, http.StatusUnprocessableEntity), s.handleReadMessages)

	s.registerBusGroups()
}

// alsoRespondPut documents the 200 of a PUT that answers 201 when it
// creates.
func alsoRespondPut(api huma.API, path, description string) {
	item := api.OpenAPI().Paths[path]
	if item == nil || item.Put == nil {
		return
	}
	if src := item.Put.Responses[strconv.Itoa(http.StatusCreated)]; src != nil {
		item.Put.Responses[strconv.Itoa(http.StatusOK)] = &huma.Response{Description: description, Content: src.Content, Headers: src.Headers}
	}
}

func (s *server) handlePutTopic(ctx context.Context, in *putTopicInput) (*topicOutput, error) {
	var cfg bus.TopicConfig
	if b := in.Body; b != nil {
		var p *Problem
		durations := []struct {
			field, text string
			dst         *bus.Duration
		}{
			{"default_ttl", b.DefaultTTL, &cfg.DefaultTTL}, {"retention_age", b.RetentionAge, &cfg.RetentionAge},
			{"tombstone_retention", b.TombstoneRetention, &cfg.TombstoneRetention}, {"dedup_window", b.DedupWindow, &cfg.DedupWindow},
		}
		for _, d := range durations {
			if *d.dst, p = busDuration("body."+d.field, d.text); p != nil {
				return nil, p
			}
		}
		cfg.KeepForever, cfg.RetentionBytes, cfg.Compact, cfg.MaxDeliveries = b.KeepForever, b.RetentionBytes, b.Compact, b.MaxDeliveries
	}
	t, created, err := s.cfg.Bus.PutTopic(ctx, in.Topic, cfg)
	if err != nil {
		return nil, s.busProblem(ctx, err, nil)
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return &topicOutput{Status: status, Body: topicFrom(t)}, nil
}

func (s *server) handleListTopics(ctx context.Context, _ *struct{}) (*listTopicsOutput, error) {
	ts, err := s.cfg.Bus.ListTopics(ctx)
	if err != nil {
		return nil, s.busProblem(ctx, err, nil)
	}
	out := &listTopicsOutput{Body: TopicList{Topics: make([]Topic, len(ts))}}
	for i, t := range ts {
		out.Body.Topics[i] = *topicFrom(t)
	}
	return out, nil
}

func (s *server) handleGetTopic(ctx context.Context, in *topicPathInput) (*topicOutput, error) {
	t, err := s.cfg.Bus.GetTopic(ctx, in.Topic)
	if err != nil {
		return nil, s.busProblem(ctx, err, nil)
	}
	return &topicOutput{Status: http.StatusOK, Body: topicFrom(t)}, nil
}

func (s *server) handleDeleteTopic(ctx context.Context, in *topicPathInput) (*struct{}, error) {
	if err := s.cfg.Bus.DeleteTopic(ctx, in.Topic); err != nil {
		return nil, s.busProblem(ctx, err, nil)
	}
	return nil, nil
}

func (s *server) handlePublish(ctx context.Context, in *publishInput) (*publishOutput, error) {
	msgs := make([]bus.Message, len(in.Body.Messages))
	for i, m := range in.Body.Messages {
		field := fmt.Sprintf("body.messages[%d].", i)
		if n := len(m.Payload); n > bus.MaxMessageBytes {
			return nil, tooLarge(field+"payload", n, bus.MaxMessageBytes)
		}
		for _, f := range []struct{ name, v string }{{"key", m.Key}, {"id", m.ID}, {"idempotency_key", m.IdempotencyKey}, {"correlation_id", m.CorrelationID}} {
			if p := badName(field+f.name, f.v); p != nil {
				return nil, p
			}
		}
		ttl, p := busDuration(field+"ttl", m.TTL)
		if p != nil {
			return nil, p
		}
		msgs[i] = bus.Message{
			Key: m.Key, ID: m.ID, IdempotencyKey: m.IdempotencyKey, CorrelationID: m.CorrelationID,
			Headers: m.Headers, Payload: m.Payload, Tombstone: m.Tombstone, TTL: time.Duration(ttl),
		}
	}
	res, err := s.cfg.Bus.Publish(ctx, in.Topic, msgs)
	if errors.Is(err, engine.ErrIdempotencyMismatch) {
		// The engine names the key; point at the first message with it.
		loc := "body.messages"
		for i, m := range in.Body.Messages {
			if m.IdempotencyKey != "" && strings.Contains(err.Error(), strconv.Quote(m.IdempotencyKey)) {
				loc = fmt.Sprintf("body.messages[%d].idempotency_key", i)
				break
			}
		}
		return nil, newProblem(http.StatusConflict, TypeIdempotencyMismatch,
			"an idempotency key was first used for a message with other content",
			ProblemDetail{Location: loc, Message: "the key was first used for other content"})
	}
	if err != nil {
		return nil, s.busProblem(ctx, err, nil)
	}
	out := &publishOutput{Body: PublishResults{Results: make([]PublishResult, len(res))}}
	for i, r := range res {
		out.Body.Results[i] = PublishResult{ID: r.ID, Partition: r.Partition, Position: r.Position, PublishedAt: r.PublishedAt, Duplicate: r.Duplicate}
	}
	return out, nil
}

func (s *server) handleReadMessages(ctx context.Context, in *readMessagesInput) (*readMessagesOutput, error) {
	ms, err := s.cfg.Bus.ReadMessages(ctx, in.Topic, in.Partition, in.From, in.Limit)
	if err != nil {
		return nil, s.busProblem(ctx, err, []string{"partition", "from", "limit"})
	}
	out := &readMessagesOutput{Body: BusMessageList{Messages: make([]BusMessage, len(ms))}}
	for i, m := range ms {
		out.Body.Messages[i] = busMessageFrom(m)
	}
	return out, nil
}

// busDuration reads an optional Go duration string; range checks are the
// bus's.
func busDuration(location, text string) (bus.Duration, *Problem) {
	if text == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(text)
	if err != nil {
		return 0, validation(location, "not a duration like 30s or 500ms: %q", echoable(text))
	}
	return bus.Duration(d), nil
}

// badName refuses an id or a name that is not UTF-8 or holds a control
// character (ident.Check): ids travel in headers, logs and text columns.
func badName(location, s string) *Problem {
	if err := ident.Check(s); err != nil {
		return validation(location, "%s", err.Error())
	}
	return nil
}

// badText refuses free text that a text column of some store would refuse
// (ident.CheckText: not UTF-8, or NUL), so that such input is a 422 rather
// than a storage failure.
func badText(location, s string) *Problem {
	if err := ident.CheckText(s); err != nil {
		return validation(location, "%s", err.Error())
	}
	return nil
}

func durationText(d bus.Duration) string {
	if d == 0 {
		return ""
	}
	return time.Duration(d).String()
}

func topicConfigFrom(c bus.TopicConfig) TopicConfig {
	return TopicConfig{
		DefaultTTL: durationText(c.DefaultTTL), RetentionAge: durationText(c.RetentionAge), KeepForever: c.KeepForever,
		RetentionBytes: c.RetentionBytes, Compact: c.Compact, TombstoneRetention: durationText(c.TombstoneRetention),
		DedupWindow: durationText(c.DedupWindow), MaxDeliveries: c.MaxDeliveries,
	}
}

func topicFrom(t bus.Topic) *Topic {
	return &Topic{Name: t.Name, Config: topicConfigFrom(t.Config), Effective: topicConfigFrom(t.Effective), CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt}
}

func busMessageFrom(m storage.Message) BusMessage {
	out := BusMessage{
		ID: m.ID, Topic: m.Topic, Key: m.Key, CorrelationID: m.CorrelationID, Partition: m.Partition, Position: m.Position,
		Payload: rawJSON(m.Payload), Tombstone: m.Tombstone, PublishedAt: m.PublishedAt, ExpiresAt: m.ExpiresAt,
	}
	if len(m.Headers) > 0 {
		_ = json.Unmarshal(m.Headers, &out.Headers) // written by the bus from a map; a bad document reads as none
	}
	return out
}

// busProblem maps a bus error to a problem. An invalid field is located
// in the path for topic, group and correlation_id, in the query for the
// fields query names, and in the body otherwise.
func (s *server) busProblem(ctx context.Context, err error, query []string) *Problem {
	var ie *bus.InvalidError
	switch {
	case errors.As(err, &ie):
		loc := "body." + ie.Field
		switch {
		case ie.Field == "topic" || ie.Field == "group" || ie.Field == "correlation_id":
			loc = "path." + ie.Field
		case slices.Contains(query, ie.Field):
			loc = "query." + ie.Field
		}
		return newProblem(http.StatusUnprocessableEntity, TypeValidation, loc+": "+ie.Reason,
			ProblemDetail{Location: loc, Message: ie.Reason})
	case errors.Is(err, bus.ErrTopicNotFound):
		return newProblem(http.StatusNotFound, TypeTopicNotFound, userText(err),
			ProblemDetail{Location: "path.topic", Message: "no such topic"})
	case errors.Is(err, bus.ErrGroupNotFound):
		return newProblem(http.StatusNotFound, TypeGroupNotFound, userText(err),
			ProblemDetail{Location: "path.group", Message: "no such consumer group"})
	case errors.Is(err, bus.ErrGroupExists):
		return newProblem(http.StatusConflict, TypeGroupExists, userText(err),
			ProblemDetail{Location: "body", Message: "the group exists with another configuration"})
	case errors.Is(err, bus.ErrReceiptLost):
		return newProblem(http.StatusConflict, TypeReceiptLost,
			"the receipt's claim is gone (acked, expired and handed out again, or the message was deleted)",
			ProblemDetail{Location: "body.receipt", Message: "no longer valid"})
	case errors.Is(err, bus.ErrStopped):
		return newProblem(http.StatusServiceUnavailable, TypeUnavailable, "the server is shutting down")
	default:
		return s.problemFor(ctx, err, "")
	}
}
