// Package drain is the one way a closing part waits for its work in
// flight: until a WaitGroup is done, or, when the caller's patience (ctx)
// runs out first, cancel the work and wait for it to give up.
package drain

import (
	"context"
	"sync"
)

// Wait blocks until wg is done. If ctx ends first it calls cancel, which
// must make the work return, waits for wg, and returns ctx's error.
func Wait(ctx context.Context, wg *sync.WaitGroup, cancel context.CancelFunc) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		cancel()
		<-done
		return ctx.Err()
	}
}
