package fleet

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus"
)

const leaseName = "rollouts"

// Run subscribes to the gateways' reports and works until ctx ends or
// Close is called: it ingests reports, and while this replica holds the
// lease it steps the rollouts every Tick. It returns nil at a clean stop.
func (f *Fleet) Run(ctx context.Context) error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return ErrClosed
	}
	if f.cancel != nil {
		f.mu.Unlock()
		return fmt.Errorf("fleet: %w: Run called twice", ErrState)
	}
	ctx, cancel := context.WithCancel(ctx)
	f.cancel = cancel
	f.mu.Unlock()
	defer close(f.stopped)
	defer cancel()

	var subs []bus.Subscription
	defer func() {
		uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer ucancel()
		for _, s := range subs {
			_ = s.Unsubscribe(uctx)
		}
	}()
	for _, filter := range []string{app.StatusFilter, app.PresenceFilter} {
		s, err := f.bus.Subscribe(ctx, "$share/"+f.opts.ShareGroup+"/"+filter, f.ingest.handle, &bus.SubscribeOptions{QoS: bus.AtLeastOnce, Buffer: 4096})
		if err != nil {
			return fmt.Errorf("fleet: subscribing to %s: %w", filter, err)
		}
		subs = append(subs, s)
	}
	var wg sync.WaitGroup
	wg.Go(func() { f.ingest.run(ctx) })
	defer wg.Wait()

	tick := time.NewTicker(f.opts.Tick)
	defer tick.Stop()
	defer func() {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer rcancel()
		_ = f.st.Release(rctx, leaseName, f.opts.Replica)
	}()
	for {
		f.lead(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// lead takes or renews the lease, and steps the rollouts while held.
func (f *Fleet) lead(ctx context.Context) {
	held, err := f.st.Lease(ctx, leaseName, f.opts.Replica, f.opts.LeaseTTL)
	if err != nil {
		if ctx.Err() == nil {
			f.log.Warn("fleet: the lease", "err", err)
		}
		held = false
	}
	f.mu.Lock()
	l := f.leader
	f.mu.Unlock()
	if !held {
		if f.holding {
			f.log.Info("fleet: lost the rollouts' lease")
			f.setLeader(nil)
			f.holding = false
		}
		return
	}
	if l == nil {
		if !f.holding {
			f.log.Info("fleet: holding the rollouts' lease")
			f.resync(ctx)
			f.holding = true
		}
		if l, err = loadLeader(ctx, f); err != nil {
			f.log.Error("fleet: loading the fleet's state", "err", err)
			return
		}
		f.setLeader(l)
	}
	if err := l.follow(ctx); err != nil {
		f.log.Error("fleet: following the store", "err", err)
		f.setLeader(nil)
		return
	}
	reload, err := l.step(ctx)
	if err != nil && ctx.Err() == nil {
		f.log.Error("fleet: a rollout step", "err", err)
	}
	if reload || err != nil {
		f.setLeader(nil) // loaded afresh at the next tick
	}
}

func (f *Fleet) setLeader(l *leader) {
	f.mu.Lock()
	f.leader = l
	f.mu.Unlock()
}

// resync takes in the retained status and presence of every instance
// (a shared subscription is not sent retained messages, MQTT v5 3.8.4):
// what a replica that died had taken off the bus and not written is in
// them. It listens until they stop coming (no message for 300 ms) or 15 s.
func (f *Fleet) resync(ctx context.Context) {
	got := make(chan struct{}, 1)
	h := func(ctx context.Context, msg *bus.Message) {
		f.ingest.handle(ctx, msg)
		select {
		case got <- struct{}{}:
		default:
		}
	}
	var subs []bus.Subscription
	for _, filter := range []string{app.StatusFilter, app.PresenceFilter} {
		s, err := f.bus.Subscribe(ctx, filter, h, &bus.SubscribeOptions{QoS: bus.AtLeastOnce, Buffer: 4096})
		if err != nil {
			f.log.Warn("fleet: reading the retained reports", "filter", filter, "err", err)
			continue
		}
		subs = append(subs, s)
	}
	quiet := time.NewTimer(300 * time.Millisecond)
	limit := time.NewTimer(15 * time.Second)
	defer limit.Stop()
	defer quiet.Stop()
wait:
	for {
		select {
		case <-got:
			quiet.Reset(300 * time.Millisecond)
		case <-quiet.C:
			break wait
		case <-limit.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	for _, s := range subs {
		_ = s.Unsubscribe(context.WithoutCancel(ctx))
	}
}

// Close stops Run (waiting for it up to ctx's deadline) and gives up the
// lease. It is safe to call twice; the store and the bus are the caller's
// to close.
func (f *Fleet) Close(ctx context.Context) error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	cancel := f.cancel
	f.mu.Unlock()
	if cancel == nil {
		return nil // never run
	}
	cancel()
	select {
	case <-f.stopped:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("fleet: close: %w", ctx.Err())
	}
}

// Leader reports whether this replica holds the rollouts' lease.
func (f *Fleet) Leader() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader != nil
}
