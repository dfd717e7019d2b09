// Command fanout is media upload processing as a choreography: one
// MediaUploaded event, three services that react to it in parallel, each
// through its own consumer group of the topic — so each gets every upload,
// at its own pace, and one failing does not hold the others back.
//
//	                            +--> thumbnail (preview)
//	uploader --MediaUploaded--> +--> tagger    (AI image tags)
//	                            +--> cdn       (push to the CDN)
//
// The tagger's model is cold on its first call for each file and fails;
// the Retry middleware runs it again in the process, so the failure costs
// no delivery. The CDN uploader calls through a circuit breaker.
//
//	go run ./cmd/accord server         # in one terminal
//	go run ./examples/choreography/fanout
//	accord trace <correlation id>      # one upload, all three groups
package main
