// Command approval is document approval as a choreography that ends in a
// webhook: no service of the last step runs a consumer — Accord pushes
// each approval to an HTTP endpoint.
//
//	submission --DocumentSubmitted--> reviewer --DocumentApproved--> webhook group --POST--> /approvals
//
// The submission service publishes DocumentSubmitted. The reviewer (a
// consumer group) checks the document and publishes DocumentApproved with
// the same correlation id. The topic's webhook group makes Accord POST
// every approval to the endpoint this program serves, which records each
// once by its Idempotency-Key (the message id). The server must be allowed
// to call it, as a server on a loopback address is by default (one on
// another address needs --push-allow 'http://127.0.0.1:*'):
//
//	go run ./cmd/accord server                                     # in one terminal
//	go run ./examples/choreography/approval
//	accord trace <correlation id>                                  # one document, end to end
package main
