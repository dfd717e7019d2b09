package api

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/accord-saga/accord/internal/bus"
	"github.com/accord-saga/accord/internal/redact"
	"github.com/accord-saga/accord/internal/storage"
)

// GroupConfig is a consumer group's configuration. Durations are Go
// duration strings.
type GroupConfig struct {
	MaxDeliveries int            `json:"max_deliveries,omitempty" minimum:"0" maximum:"1000" doc:"Hand-outs of a message before it is dead-lettered. Default the topic's."`
	AckTimeout    string         `json:"ack_timeout,omitempty" doc:"How long a received message stays claimed without an ack, nack or heartbeat (100ms..12h). Default 30s."`
	Backoff       *BackoffConfig `json:"backoff,omitempty" doc:"Redelivery delay after a nack: initial × 2^(attempt−1), at most max, with jitter."`
	Webhook       *WebhookConfig `json:"webhook,omitempty" doc:"Push each message to this endpoint instead of waiting for receives."`
	StartSaga     *TriggerConfig `json:"start_saga,omitempty" doc:"Start a saga of this definition per message, with the payload as input."`
}

// BackoffConfig is a group's nack backoff.
type BackoffConfig struct {
	Initial string `json:"initial,omitempty" doc:"Default 1s."`
	Max     string `json:"max,omitempty" doc:"Default 5m."`
}

// WebhookConfig is a push subscription.
type WebhookConfig struct {
	URL         string `json:"url" maxLength:"2048"`
	Timeout     string `json:"timeout,omitempty" doc:"Per call (10ms..10m). Default 10s."`
	Concurrency int    `json:"concurrency,omitempty" minimum:"0" maximum:"256" doc:"Calls in flight at once. Default 4."`
}

// TriggerConfig starts sagas from a topic.
type TriggerConfig struct {
	Definition string `json:"definition" maxLength:"128"`
	Version    int    `json:"version,omitempty" minimum:"0" maximum:"2147483647" doc:"Absent or 0: the latest at each start."`
}

// GroupPartition is a group's backlog in one partition.
type GroupPartition struct {
	Partition   int   `json:"partition"`
	Pending     int   `json:"pending" doc:"Messages the group has not finished with: ready, delayed, blocked or in flight."`
	InFlight    int   `json:"in_flight"`
	Blocked     int   `json:"blocked" doc:"Waiting behind an earlier message of their key."`
	Position    int64 `json:"position" doc:"Committed position: every message up to it is finished."`
	OldestAgeMS int64 `json:"oldest_age_ms" doc:"Age of the oldest unfinished message."`
	DeadLetters int   `json:"dead_letters"`
}

// Group is a consumer group.
type Group struct {
	Topic      string           `json:"topic"`
	Name       string           `json:"name"`
	Config     GroupConfig      `json:"config" doc:"The configuration as given."`
	Effective  GroupConfig      `json:"effective" doc:"The configuration with every default filled in."`
	CreatedAt  time.Time        `json:"created_at"`
	Partitions []GroupPartition `json:"partitions,omitempty" doc:"The backlog per partition (GET of one group only)."`
}

// GroupList lists a topic's groups.
type GroupList struct {
	Groups []Group `json:"groups"`
}

// BusAttempt is one failed delivery of a message.
type BusAttempt struct {
	Attempt int       `json:"attempt"`
	At      time.Time `json:"at,omitzero"`
	Outcome string    `json:"outcome" enum:"nack,expired" doc:"nack, or expired: the consumer did not answer within the ack timeout."`
	Reason  string    `json:"reason,omitempty"`
}

// Delivery is a message handed to a consumer.
type Delivery struct {
	Receipt string       `json:"receipt" doc:"Names this claim: ack, nack and heartbeat quote it."`
	Attempt int          `json:"attempt" doc:"Hand-outs of the message to the group, this one included; a replay from the dead letters does not reset it."`
	History []BusAttempt `json:"history,omitempty" doc:"The earlier attempts, those before a replay from the dead letters included."`
	BusMessage
}

// DeliveryList answers a receive.
type DeliveryList struct {
	Messages []Delivery `json:"messages"`
}

// AckResult is the fate of one receipt of an ack.
type AckResult struct {
	Receipt string   `json:"receipt"`
	Status  int      `json:"status" doc:"200 when acked; 409 when the receipt is lost; 422 when it is not a receipt."`
	Problem *Problem `json:"problem,omitempty"`
}

// AckResults answers an ack, in request order.
type AckResults struct {
	Results []AckResult `json:"results"`
}

// DeadLetter is a message a group gave up on.
type DeadLetter struct {
	ID       int64        `json:"id"`
	Reason   string       `json:"reason,omitempty"`
	Attempts int          `json:"attempts"`
	History  []BusAttempt `json:"history,omitempty"`
	DeadAt   time.Time    `json:"dead_at"`
	Message  BusMessage   `json:"message"`
}

// DeadLetterList is a page of a group's dead letters.
type DeadLetterList struct {
	DeadLetters []DeadLetter `json:"dead_letters"`
	NextAfter   int64        `json:"next_after,omitempty" doc:"Pass as after for the next page; absent on the last page."`
}

// Count answers a replay or a purge.
type Count struct {
	Count int `json:"count"`
}

// TraceGroup is one group's handling of a message.
type TraceGroup struct {
	Group    string `json:"group"`
	Status   string `json:"status" enum:"pending,blocked,in_flight,dead_lettered,done"`
	Attempts int    `json:"attempts"`
	AgeMS    int64  `json:"age_ms" doc:"How long the message has waited for the group (0 once done)."`
}

// TraceMessage is one message of a flow.
type TraceMessage struct {
	BusMessage
	Groups []TraceGroup `json:"groups"`
}

// Trace is a flow: its messages in publish order.
type Trace struct {
	CorrelationID string         `json:"correlation_id"`
	Messages      []TraceMessage `json:"messages"`
}

// StalledMessage is a message a group has not finished with for too long.
type StalledMessage struct {
	Group    string     `json:"group"`
	Attempts int        `json:"attempts"`
	AgeMS    int64      `json:"age_ms"`
	Message  BusMessage `json:"message"`
}

// StalledList lists stalled messages, oldest first.
type StalledList struct {
	StallAfter string           `json:"stall_after" doc:"The age past which an unfinished message counts as stalled."`
	Messages   []StalledMessage `json:"messages"`
}

type groupPathInput struct {
	Topic string `path:"topic"`
	Group string `path:"group" doc:"Group name: 1..128 characters of [A-Za-z0-9._-]."`
}

type createGroupBody struct {
	Start   string    `json:"start,omitempty" enum:"end,beginning,time" doc:"Where the group starts: end (messages published from now on; default), beginning (every stored message), time (messages published at or after start_at)."`
	StartAt time.Time `json:"start_at,omitzero" doc:"RFC 3339; with start time."`
	GroupConfig
}

type createGroupInput struct {
	Topic string           `path:"topic"`
	Group string           `path:"group"`
	Body  *createGroupBody `required:"false"`
}

type groupOutput struct {
	Status int
	Body   *Group
}

type listGroupsOutput struct {
	Body GroupList
}

type receiveInput struct {
	Topic string `path:"topic"`
	Group string `path:"group"`
	Body  *struct {
		Max        int    `json:"max,omitempty" minimum:"1" maximum:"1000" doc:"Most messages to return. Default 1."`
		Wait       string `json:"wait,omitempty" doc:"How long to wait for a message when none is ready (Go duration, at most 60s). Default 0."`
		Visibility string `json:"visibility,omitempty" doc:"How long the messages stay claimed (Go duration, at most 12h). Default the group's ack_timeout."`
	} `required:"false"`
}

type receiveOutput struct {
	Body DeliveryList
}

type ackInput struct {
	Topic string `path:"topic"`
	Group string `path:"group"`
	Body  struct {
		Receipts []string `json:"receipts" minItems:"1" maxItems:"1000"`
	}
}

type ackOutput struct {
	Body AckResults
}

type nackInput struct {
	Topic string `path:"topic"`
	Group string `path:"group"`
	Body  struct {
		Receipt    string `json:"receipt" minLength:"1" maxLength:"600"`
		Reason     string `json:"reason,omitempty" maxLength:"8192" doc:"Kept in the message's attempt history."`
		Delay      string `json:"delay,omitempty" doc:"Hand the message out again after this (Go duration, at most 12h); default the group's backoff."`
		DeadLetter bool   `json:"dead_letter,omitempty" doc:"Dead-letter the message at once: it can never succeed."`
	}
}

type busHeartbeatInput struct {
	Topic string `path:"topic"`
	Group string `path:"group"`
	Body  struct {
		Receipt string `json:"receipt" minLength:"1" maxLength:"600"`
		Extend  string `json:"extend,omitempty" doc:"New claim time from now (Go duration, at most 12h). Default the group's ack_timeout."`
	}
}

type deadLettersInput struct {
	Topic string `path:"topic"`
	Group string `path:"group"`
	After int64  `query:"after" minimum:"0" doc:"next_after of the previous page."`
	Limit int    `query:"limit" minimum:"1" maximum:"1000" default:"100"`
}

type deadLettersOutput struct {
	Body DeadLetterList
}

type deadLetterSelectInput struct {
	Topic string `path:"topic"`
	Group string `path:"group"`
	Body  struct {
		IDs []int64 `json:"ids,omitempty" maxItems:"1000" doc:"Dead letter ids."`
		All bool    `json:"all,omitempty" doc:"Every dead letter of the group (instead of ids)."`
	}
}

type countOutput struct {
	Body Count
}

type traceInput struct {
	CorrelationID string `path:"correlation_id"`
}

type traceOutput struct {
	Body Trace
}

type stalledInput struct {
	Limit int `query:"limit" minimum:"1" maximum:"1000" default:"100"`
}

type stalledOutput struct {
	Body StalledList
}

func (s *server) registerBusGroups() {
	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "createGroup",
		Method:      http.MethodPut,
		Path:        "/v1/topics/{topic}/groups/{group}",
		Summary:     "Create a consumer group",
		Description: "201 when created; 200 when the group exists with the same configuration; 409 group-exists when with another.",
		Tags:        []string{"Bus"}, DefaultStatus: http.StatusCreated,
	}, http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusUnprocessableEntity), s.handleCreateGroup)
	alsoRespondPut(s.api, "/v1/topics/{topic}/groups/{group}", "The group exists with the same configuration.")

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "listGroups", Method: http.MethodGet, Path: "/v1/topics/{topic}/groups",
		Summary: "List a topic's consumer groups", Tags: []string{"Bus"},
	}, http.StatusNotFound, http.StatusUnprocessableEntity), s.handleListGroups)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "getGroup", Method: http.MethodGet, Path: "/v1/topics/{topic}/groups/{group}",
		Summary:     "Get a consumer group with its backlog",
		Description: "The group with its backlog per partition: pending, in flight, blocked, committed position, oldest age, dead letters.",
		Tags:        []string{"Bus"},
	}, http.StatusNotFound, http.StatusUnprocessableEntity), s.handleGetGroup)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "deleteGroup", Method: http.MethodDelete, Path: "/v1/topics/{topic}/groups/{group}",
		Summary: "Delete a consumer group", Description: "Deletes the group with its deliveries and dead letters.",
		Tags: []string{"Bus"},
	}, http.StatusNotFound, http.StatusUnprocessableEntity), s.handleDeleteGroup)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "receive", Method: http.MethodPost, Path: "/v1/topics/{topic}/groups/{group}/receive",
		Summary: "Claim messages of a group (long poll)",
		Description: "Claims up to max ready messages, waiting up to wait for one. Each stays claimed for visibility " +
			"(default the group's ack_timeout): ack, nack or heartbeat it with its receipt.",
		Tags: []string{"Bus"},
	}, http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity), s.handleReceive)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "ack", Method: http.MethodPost, Path: "/v1/topics/{topic}/groups/{group}/ack",
		Summary:     "Acknowledge received messages",
		Description: "Acks each receipt and reports each one's status in order: 200, 409 receipt-lost, or 422 for a string that is not a receipt.",
		Tags:        []string{"Bus"},
	}, http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity), s.handleAck)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "nack", Method: http.MethodPost, Path: "/v1/topics/{topic}/groups/{group}/nack",
		Summary: "Report a received message as failed",
		Description: "The message is handed out again after delay (default the group's backoff), before later messages of its key; " +
			"with dead_letter it goes to the group's dead letters at once. 409 receipt-lost when the claim is gone.",
		Tags: []string{"Bus"},
	}, http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusUnprocessableEntity), s.handleNack)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "heartbeatDelivery", Method: http.MethodPost, Path: "/v1/topics/{topic}/groups/{group}/heartbeat",
		Summary: "Extend a received message's claim", Description: "409 receipt-lost when the claim is gone: stop working on the message.",
		Tags: []string{"Bus"},
	}, http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusUnprocessableEntity), s.handleBusHeartbeat)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "listDeadLetters", Method: http.MethodGet, Path: "/v1/topics/{topic}/groups/{group}/dead-letters",
		Summary: "List a group's dead letters", Tags: []string{"Bus"},
	}, http.StatusNotFound, http.StatusUnprocessableEntity), s.handleDeadLetters)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "replayDeadLetters", Method: http.MethodPost, Path: "/v1/topics/{topic}/groups/{group}/dead-letters/replay",
		Summary: "Give dead letters back to their group", Description: "Body: ids, or all: true. Answers how many were replayed.",
		Tags: []string{"Bus"},
	}, http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity), s.handleReplayDeadLetters)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "purgeDeadLetters", Method: http.MethodPost, Path: "/v1/topics/{topic}/groups/{group}/dead-letters/purge",
		Summary: "Delete dead letters", Description: "Body: ids, or all: true. Answers how many were deleted.",
		Tags: []string{"Bus"},
	}, http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity), s.handlePurgeDeadLetters)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "trace", Method: http.MethodGet, Path: "/v1/traces/{correlation_id}",
		Summary: "Follow a flow",
		Description: "Every message with the correlation id, in publish order, with each group's status for it. " +
			"404 when no stored message has the id.",
		Tags: []string{"Bus"},
	}, http.StatusNotFound, http.StatusUnprocessableEntity), s.handleTrace)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "listStalled", Method: http.MethodGet, Path: "/v1/bus/stalled",
		Summary:     "List stalled messages",
		Description: "Messages a group has not finished with for longer than stall_after, oldest first.",
		Tags:        []string{"Bus"},
	}, http.StatusUnprocessableEntity), s.handleStalled)
}

func (s *server) handleCreateGroup(ctx context.Context, in *createGroupInput) (*groupOutput, error) {
	var cfg bus.GroupConfig
	var start bus.GroupStart
	if b := in.Body; b != nil {
		start = bus.GroupStart{From: b.Start, At: b.StartAt}
		var p *Problem
		if cfg, p = groupConfigOf(b.GroupConfig); p != nil {
			return nil, p
		}
	}
	g, created, err := s.cfg.Bus.CreateGroup(ctx, in.Topic, in.Group, cfg, start)
	if err != nil {
		return nil, s.busProblem(ctx, err, nil)
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return &groupOutput{Status: status, Body: groupFrom(g)}, nil
}

func groupConfigOf(c GroupConfig) (bus.GroupConfig, *Problem) {
	out := bus.GroupConfig{MaxDeliveries: c.MaxDeliveries}
	var p *Problem
	if out.AckTimeout, p = busDuration("body.ack_timeout", c.AckTimeout); p != nil {
		return out, p
	}
	if b := c.Backoff; b != nil {
		if out.Backoff.Initial, p = busDuration("body.backoff.initial", b.Initial); p != nil {
			return out, p
		}
		if out.Backoff.Max, p = busDuration("body.backoff.max", b.Max); p != nil {
			return out, p
		}
	}
	if w := c.Webhook; w != nil {
		if p := badName("body.webhook.url", w.URL); p != nil {
			return out, p
		}
		out.Webhook = &bus.Webhook{URL: w.URL, Concurrency: w.Concurrency}
		if out.Webhook.Timeout, p = busDuration("body.webhook.timeout", w.Timeout); p != nil {
			return out, p
		}
	}
	if t := c.StartSaga; t != nil {
		if p := badName("body.start_saga.definition", t.Definition); p != nil {
			return out, p
		}
		out.StartSaga = &bus.Trigger{Definition: t.Definition, Version: t.Version}
	}
	return out, nil
}

func groupConfigFrom(c bus.GroupConfig) GroupConfig {
	out := GroupConfig{MaxDeliveries: c.MaxDeliveries, AckTimeout: durationText(c.AckTimeout)}
	if c.Backoff != (bus.Backoff{}) {
		out.Backoff = &BackoffConfig{Initial: durationText(c.Backoff.Initial), Max: durationText(c.Backoff.Max)}
	}
	if w := c.Webhook; w != nil {
		out.Webhook = &WebhookConfig{URL: redact.URL(w.URL), Timeout: durationText(w.Timeout), Concurrency: w.Concurrency}
	}
	if t := c.StartSaga; t != nil {
		out.StartSaga = &TriggerConfig{Definition: t.Definition, Version: t.Version}
	}
	return out
}

func groupFrom(g bus.Group) *Group {
	return &Group{Topic: g.Topic, Name: g.Name, Config: groupConfigFrom(g.Config), Effective: groupConfigFrom(g.Effective), CreatedAt: g.CreatedAt}
}

func (s *server) handleListGroups(ctx context.Context, in *topicPathInput) (*listGroupsOutput, error) {
	gs, err := s.cfg.Bus.ListGroups(ctx, in.Topic)
	if err != nil {
		return nil, s.busProblem(ctx, err, nil)
	}
	out := &listGroupsOutput{Body: GroupList{Groups: make([]Group, len(gs))}}
	for i, g := range gs {
		out.Body.Groups[i] = *groupFrom(g)
	}
	return out, nil
}

func (s *server) handleGetGroup(ctx context.Context, in *groupPathInput) (*groupOutput, error) {
	g, err := s.cfg.Bus.GetGroup(ctx, in.Topic, in.Group)
	if err != nil {
		return nil, s.busProblem(ctx, err, nil)
	}
	stats, err := s.cfg.Bus.GroupStats(ctx, in.Topic, in.Group)
	if err != nil {
		return nil, s.busProblem(ctx, err, nil)
	}
	out := groupFrom(g)
	out.Partitions = make([]GroupPartition, len(stats))
	for i, st := range stats {
		out.Partitions[i] = GroupPartition{
			Partition: st.Partition, Pending: st.Pending, InFlight: st.InFlight, Blocked: st.Blocked,
			Position: st.Position, OldestAgeMS: st.OldestAge.Milliseconds(), DeadLetters: st.DeadLetters,
		}
	}
	return &groupOutput{Status: http.StatusOK, Body: out}, nil
}

func (s *server) handleDeleteGroup(ctx context.Context, in *groupPathInput) (*struct{}, error) {
	if err := s.cfg.Bus.DeleteGroup(ctx, in.Topic, in.Group); err != nil {
		return nil, s.busProblem(ctx, err, nil)
	}
	return nil, nil
}

func (s *server) handleReceive(ctx context.Context, in *receiveInput) (*receiveOutput, error) {
	max := 1
	var wait, visibility time.Duration
	if b := in.Body; b != nil {
		if b.Max > 0 {
			max = b.Max
		}
		var p *Problem
		if wait, p = duration("body.wait", b.Wait, 0, 0, bus.MaxWait, true); p != nil {
			return nil, p
		}
		if visibility, p = duration("body.visibility", b.Visibility, 0, 0, 12*time.Hour, true); p != nil {
			return nil, p
		}
	}
	ds, err := s.cfg.Bus.Receive(ctx, in.Topic, in.Group, max, wait, visibility)
	if err != nil {
		return nil, s.busProblem(ctx, err, nil)
	}
	out := &receiveOutput{Body: DeliveryList{Messages: make([]Delivery, len(ds))}}
	for i, d := range ds {
		out.Body.Messages[i] = Delivery{Receipt: d.Receipt, Attempt: d.Attempt, History: busHistory(d.History), BusMessage: busMessageFrom(d.Message)}
	}
	return out, nil
}

func busHistory(h []bus.Attempt) []BusAttempt {
	if len(h) == 0 {
		return nil
	}
	out := make([]BusAttempt, len(h))
	for i, a := range h {
		out[i] = BusAttempt{Attempt: a.Attempt, At: a.At, Outcome: a.Outcome, Reason: a.Reason}
	}
	return out
}

func (s *server) handleAck(ctx context.Context, in *ackInput) (*ackOutput, error) {
	// A receipt no store could look up is not a receipt: the bus refuses an
	// empty one as such.
	receipts := make([]string, len(in.Body.Receipts))
	for i, r := range in.Body.Receipts {
		if badName("", r) == nil {
			receipts[i] = r
		}
	}
	res, err := s.cfg.Bus.Ack(ctx, in.Topic, in.Group, receipts)
	if err != nil {
		return nil, s.busProblem(ctx, err, nil)
	}
	out := &ackOutput{Body: AckResults{Results: make([]AckResult, len(res))}}
	for i, e := range res {
		r := AckResult{Receipt: in.Body.Receipts[i], Status: http.StatusOK}
		if e != nil {
			p := s.busProblem(ctx, e, nil)
			for j := range p.Errors {
				if p.Errors[j].Location == "body.receipt" {
					p.Errors[j].Location = fmt.Sprintf("body.receipts[%d]", i)
				}
			}
			r.Status, r.Problem = p.Status, p
		}
		out.Body.Results[i] = r
	}
	return out, nil
}

func (s *server) handleNack(ctx context.Context, in *nackInput) (*struct{}, error) {
	b := in.Body
	if p := cmp.Or(badName("body.receipt", b.Receipt), badText("body.reason", b.Reason)); p != nil {
		return nil, p
	}
	delay := time.Duration(-1) // the group's backoff
	if b.Delay != "" {
		d, p := duration("body.delay", b.Delay, 0, 0, 12*time.Hour, true)
		if p != nil {
			return nil, p
		}
		delay = d
	}
	if err := s.cfg.Bus.Nack(ctx, in.Topic, in.Group, b.Receipt, b.Reason, delay, b.DeadLetter); err != nil {
		return nil, s.busProblem(ctx, err, nil)
	}
	return nil, nil
}

func (s *server) handleBusHeartbeat(ctx context.Context, in *busHeartbeatInput) (*struct{}, error) {
	if p := badName("body.receipt", in.Body.Receipt); p != nil {
		return nil, p
	}
	extend, p := duration("body.extend", in.Body.Extend, 0, 0, 12*time.Hour, true)
	if p != nil {
		return nil, p
	}
	if err := s.cfg.Bus.Heartbeat(ctx, in.Topic, in.Group, in.Body.Receipt, extend); err != nil {
		return nil, s.busProblem(ctx, err, nil)
	}
	return nil, nil
}

func (s *server) handleDeadLetters(ctx context.Context, in *deadLettersInput) (*deadLettersOutput, error) {
	dl, err := s.cfg.Bus.DeadLetters(ctx, in.Topic, in.Group, in.After, in.Limit)
	if err != nil {
		return nil, s.busProblem(ctx, err, []string{"after", "limit"})
	}
	out := &deadLettersOutput{Body: DeadLetterList{DeadLetters: make([]DeadLetter, len(dl))}}
	for i, d := range dl {
		out.Body.DeadLetters[i] = DeadLetter{
			ID: d.ID, Reason: d.Reason, Attempts: d.Deliveries, History: deadLetterHistory(d),
			DeadAt: d.DeadAt, Message: busMessageFrom(d.Message),
		}
	}
	if len(dl) == in.Limit {
		out.Body.NextAfter = dl[len(dl)-1].ID
	}
	return out, nil
}

// deadLetterHistory decodes a dead letter's stored history (its nacks)
// and accounts for every other attempt as expired: its consumer never
// answered.
func deadLetterHistory(d storage.DeadLetter) []BusAttempt {
	var h []bus.Attempt
	if len(d.History) > 0 {
		_ = json.Unmarshal(d.History, &h) // written by the bus; a bad document reads as no history
	}
	seen := map[int]bool{}
	for _, a := range h {
		seen[a.Attempt] = true
	}
	for n := 1; n <= d.Deliveries; n++ {
		if !seen[n] {
			h = append(h, bus.Attempt{Attempt: n, Outcome: "expired"})
		}
	}
	sort.SliceStable(h, func(i, j int) bool { return h[i].Attempt < h[j].Attempt })
	return busHistory(h)
}

// deadLetterIDs reads the selection of a replay or a purge: ids, or all
// (nil).
func deadLetterIDs(in *deadLetterSelectInput) ([]int64, *Problem) {
	b := in.Body
	switch {
	case b.All && len(b.IDs) > 0:
		return nil, validation("body.ids", "give ids or all, not both")
	case b.All:
		return nil, nil
	case len(b.IDs) == 0:
		return nil, validation("body.ids", "give the dead letters' ids, or all: true")
	}
	return b.IDs, nil
}

func (s *server) handleReplayDeadLetters(ctx context.Context, in *deadLetterSelectInput) (*countOutput, error) {
	return s.deadLetterOp(ctx, in, s.cfg.Bus.ReplayDeadLetters)
}

func (s *server) handlePurgeDeadLetters(ctx context.Context, in *deadLetterSelectInput) (*countOutput, error) {
	return s.deadLetterOp(ctx, in, s.cfg.Bus.PurgeDeadLetters)
}

// deadLetterOp replays or purges the dead letters a request selects.
func (s *server) deadLetterOp(ctx context.Context, in *deadLetterSelectInput,
	op func(ctx context.Context, topic, group string, ids []int64) (int, error),
) (*countOutput, error) {
	ids, p := deadLetterIDs(in)
	if p != nil {
		return nil, p
	}
	n, err := op(ctx, in.Topic, in.Group, ids)
	if err != nil {
		return nil, s.busProblem(ctx, err, nil)
	}
	return &countOutput{Body: Count{Count: n}}, nil
}

func (s *server) handleTrace(ctx context.Context, in *traceInput) (*traceOutput, error) {
	if p := badName("path.correlation_id", in.CorrelationID); p != nil {
		return nil, p
	}
	msgs, err := s.cfg.Bus.Trace(ctx, in.CorrelationID)
	if err != nil {
		return nil, s.busProblem(ctx, err, nil)
	}
	if len(msgs) == 0 {
		return nil, newProblem(http.StatusNotFound, TypeNotFound, "no message has correlation id "+in.CorrelationID,
			ProblemDetail{Location: "path.correlation_id", Message: "not found"})
	}
	out := &traceOutput{Body: Trace{CorrelationID: in.CorrelationID, Messages: make([]TraceMessage, len(msgs))}}
	for i, m := range msgs {
		tm := TraceMessage{BusMessage: busMessageFrom(m.Message), Groups: make([]TraceGroup, len(m.Groups))}
		for j, g := range m.Groups {
			tm.Groups[j] = TraceGroup{Group: g.Group, Status: g.Status, Attempts: g.Attempts, AgeMS: g.Age.Milliseconds()}
		}
		out.Body.Messages[i] = tm
	}
	return out, nil
}

func (s *server) handleStalled(ctx context.Context, in *stalledInput) (*stalledOutput, error) {
	st, err := s.cfg.Bus.Stalled(ctx, in.Limit)
	if err != nil {
		return nil, s.busProblem(ctx, err, []string{"limit"})
	}
	out := &stalledOutput{Body: StalledList{StallAfter: s.cfg.Bus.StallAfter().String(), Messages: make([]StalledMessage, len(st))}}
	for i, m := range st {
		out.Body.Messages[i] = StalledMessage{Group: m.Group, Attempts: m.Attempts, AgeMS: m.Age.Milliseconds(), Message: busMessageFrom(m.Message)}
	}
	return out, nil
}
