package drain

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// Work that ignores its cancellation does not hold Wait past its context.
func TestWaitReturnsByTheDeadline(t *testing.T) {
	var wg sync.WaitGroup
	release := make(chan struct{})
	wg.Add(1)
	go func() { defer wg.Done(); <-release }() // ignores cancel
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cancelled := false
	err := Wait(ctx, &wg, func() { cancelled = true })
	if !errors.Is(err, context.Canceled) || !cancelled {
		t.Fatalf("Wait: %v (cancelled %v), want it to return ctx's error after cancelling", err, cancelled)
	}
	close(release)
	wg.Wait()

	// Work that is done returns nil.
	if err := Wait(context.Background(), &wg, func() {}); err != nil {
		t.Fatal(err)
	}
}
