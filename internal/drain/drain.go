// Package drain is the one way a closing part waits for its work in
// flight: until a WaitGroup is done, or, when the caller's patience (ctx)
// runs out first, cancel the work and return at once, saying so. Close
// returns by its context's deadline even when some work ignores the
// cancellation (a driver call stuck in a system call): that work is left
// to end by itself, and the error says it was left.
package drain

import (
	"context"
	"fmt"
	"sync"
)

// Wait blocks until wg is done. If ctx ends first it calls cancel, which
// should make the work return, and returns at once an error wrapping
// ctx's error: what was still running is left to finish after Wait.
func Wait(ctx context.Context, wg *sync.WaitGroup, cancel context.CancelFunc) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	cancel()
	select {
	case <-done: // cancelled work may end at once
		return nil
	default:
		return fmt.Errorf("work still running, cancelled and left to finish: %w", ctx.Err())
	}
}
