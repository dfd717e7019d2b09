// Package worker runs pull workers: handlers of the steps whose action or
// compensation names a task queue.
//
//	c, _ := client.New("http://127.0.0.1:7780")
//	w := worker.New(c, worker.Options{Concurrency: 20})
//	w.Handle("payments", "charge", worker.Typed(func(ctx context.Context, t *worker.Task, in Charge) (Receipt, error) {
//		if in.Amount > limit {
//			return Receipt{}, worker.Failure("limit_exceeded", "over the card limit")
//		}
//		return pay(ctx, t.IdempotencyKey, in)
//	}))
//	err := w.Run(ctx) // until ctx is done, then a graceful stop
//
// Outcomes: a handler's nil error is success, its output the step's
// output; Failure is a business failure (no retry, the saga compensates);
// any other error is retryable, with the step's retry policy; a panic is
// recovered and reported retryable with the code "panic".
//
// Delivery is at least once: a task whose worker dies, or whose claim
// expires, is delivered again (Task.Deliveries counts). Make the effect
// idempotent on Task.IdempotencyKey — sdk/guard does it in the
// participant's own database transaction.
//
// Concurrency and lifecycle: Run long-polls each queue that has a handler,
// claiming no more tasks than it has free handler slots (Options.
// Concurrency, shared by all queues). While a handler runs, its claim is
// extended every HeartbeatEvery; when the server says the claim is lost,
// the handler's context is cancelled with cause ErrClaimLost and its
// result dropped. Results are reported in batches. When Run's context is
// done, Run stops polling, waits up to GracePeriod for running handlers
// (then cancels their contexts and reports their tasks retryable), reports
// every result, and returns.
package worker
