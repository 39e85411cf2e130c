package function

import (
	"context"
	"fmt"
	"sync"
)

// changeQueue hands the names of functions that changed to Options.OnChange
// from one goroutine of its own, in the order they first changed, with
// their status as it is when delivered. A name noted again before its
// delivery is delivered once. Noting never blocks, so the pool notes a
// crash loop under its lock.
type changeQueue struct {
	onChange func(Status)
	status   func(name string) Status

	mu      sync.Mutex
	pending []string
	queued  map[string]bool

	wake chan struct{} // capacity 1: something is pending
	quit chan struct{} // closed by stop
	done chan struct{} // closed when run returns
	once sync.Once
}

// start begins delivering to onChange; with none, noting does nothing.
func (q *changeQueue) start(onChange func(Status), status func(string) Status) {
	if onChange == nil {
		return
	}
	q.onChange, q.status = onChange, status
	q.queued = map[string]bool{}
	q.wake, q.quit, q.done = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	go q.run()
}

// note queues name for delivery.
func (q *changeQueue) note(name string) {
	if q.onChange == nil {
		return
	}
	q.mu.Lock()
	if !q.queued[name] {
		q.queued[name] = true
		q.pending = append(q.pending, name)
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *changeQueue) run() {
	defer close(q.done)
	for {
		select {
		case <-q.wake:
			q.deliver()
		case <-q.quit:
			q.deliver()
			return
		}
	}
}

func (q *changeQueue) deliver() {
	for {
		q.mu.Lock()
		names := q.pending
		q.pending = nil
		clear(q.queued)
		q.mu.Unlock()
		if len(names) == 0 {
			return
		}
		for _, name := range names {
			q.onChange(q.status(name))
		}
	}
}

// stop delivers what is pending and ends the goroutine, or gives up at
// ctx's end. It is safe to call twice.
func (q *changeQueue) stop(ctx context.Context) error {
	if q.onChange == nil {
		return nil
	}
	q.once.Do(func() { close(q.quit) })
	select {
	case <-q.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("function: close: OnChange has not returned: %w", ctx.Err())
	}
}
