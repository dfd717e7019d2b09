package engine

import "context"

// Settle waits until every partition loop of e has made durable every
// input queued so far and every timer due by e's clock now. Tests call it
// after moving a manual clock, before looking at what the engine did.
func Settle(ctx context.Context, e *Engine) error {
	for _, p := range e.running() {
		if _, err := p.call(ctx, &request{kind: reqSync}); err != nil {
			return err
		}
	}
	return nil
}
