// Command triage is customer-support triage as a choreography: no
// conductor, three services that react to each other's events on Accord's
// bus.
//
//	ticket service  --TicketCreated-->  classifier  --TicketClassified-->  notifier
//
// The ticket service stores each ticket and its TicketCreated event in one
// transaction of its own SQLite database (sdk/outbox), and a relay
// publishes the event. The classifier (a stand-in for an LLM analyzer)
// files the ticket under billing, technical, account or general and
// publishes TicketClassified with the ticket's correlation id. The
// notifier alerts the team's channel once per ticket: it records each
// message in its own database with the alert (outbox.Inbox), so a
// redelivered event — here the first one, whose ack is "lost" on purpose —
// sends nothing twice.
//
//	go run ./cmd/accord server         # in one terminal
//	go run ./examples/choreography/triage
//	accord trace <correlation id>      # one flow, end to end
package main
