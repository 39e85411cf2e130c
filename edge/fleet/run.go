package fleet

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
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

	var keeper sync.WaitGroup
	lease := newHeldLease()
	keeper.Go(func() { f.keepLease(ctx, lease) })
	defer func() {
		keeper.Wait() // renews no more
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer rcancel()
		_ = f.st.Release(rctx, leaseName, f.opts.Replica)
	}()
	tick := time.NewTicker(f.opts.Tick)
	defer tick.Stop()
	for {
		f.lead(lease.context())
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// heldLease is the rollouts' lease as this replica's keeper last saw it:
// while held, a context that is cancelled when the lease is lost, so that
// a step, a resync or a load in flight stops writing at once.
type heldLease struct {
	none   context.Context // cancelled: the context while not held
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc
}

func (h *heldLease) set(parent context.Context, held bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case held && h.ctx == nil:
		h.ctx, h.cancel = context.WithCancel(parent)
	case !held && h.ctx != nil:
		h.cancel()
		h.ctx, h.cancel = nil, nil
	}
}

// context is the lease's context while it is held, else a cancelled one.
func (h *heldLease) context() context.Context {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ctx == nil {
		return h.none
	}
	return h.ctx
}

func newHeldLease() *heldLease {
	none, cancel := context.WithCancel(context.Background())
	cancel()
	return &heldLease{none: none}
}

// keepLease takes or renews the lease every third of LeaseTTL (at most
// every Tick) until ctx ends. It runs on a goroutine of its own: the
// lease lapsed, and passed between the replicas, while the holder's own
// loop spent longer than LeaseTTL reading 10,000 retained reports at
// takeover or sending a wave's documents.
func (f *Fleet) keepLease(ctx context.Context, h *heldLease) {
	defer h.set(ctx, false)
	every := min(f.opts.LeaseTTL/3, f.opts.Tick)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		held, err := f.st.Lease(ctx, leaseName, f.opts.Replica, f.opts.LeaseTTL)
		if err != nil {
			if ctx.Err() == nil {
				f.log.Warn("fleet: the lease", "err", err)
			}
			held = false
		}
		h.set(ctx, held)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// lead steps the rollouts while the lease is held: ctx is the lease's,
// cancelled when it is not.
func (f *Fleet) lead(ctx context.Context) {
	f.mu.Lock()
	l := f.leader
	f.mu.Unlock()
	if ctx.Err() != nil {
		if f.holding {
			f.log.Info("fleet: lost the rollouts' lease")
			f.setLeader(nil)
			f.holding = false
		}
		return
	}
	var err error
	if l == nil {
		if !f.holding {
			f.log.Info("fleet: holding the rollouts' lease")
			f.resync(ctx)
			f.holding = true
		}
		if l, err = loadLeader(ctx, f); err != nil {
			if ctx.Err() == nil {
				f.log.Error("fleet: loading the fleet's state", "err", err)
			}
			return
		}
		f.setLeader(l)
	}
	if err := l.follow(ctx); err != nil {
		if ctx.Err() == nil {
			f.log.Error("fleet: following the store", "err", err)
		}
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

// resyncInstance names the marker a replica sends itself on the status
// and presence topics after subscribing to the retained reports: a broker
// sends a subscription's retained messages before anything published after
// it was made, and one subscription's messages reach its handler in order,
// so when the marker arrives every retained report has. No instance is
// named so (ValidInstance refuses '~'); the ingester passes over it.
const resyncInstance = "~fleet-resync"

// resync takes in the retained status and presence of every instance
// (a shared subscription is not sent retained messages, MQTT v5 3.8.4):
// what a replica that died had taken off the bus and not written is in
// them. It listens until its markers come back behind them, or 60 s.
// Live reports on the same subscription (a broker sends them without the
// retain flag) are left to the shared subscription. (It listened until
// the reports stopped for 300 ms: live ones kept that from coming while a
// rollout ran, so each takeover waited its whole bound, and counting only
// retained ones, a busy link's gaps ended it with 3,585 of 20,000 read —
// the rollout then waited on reports that were never written.)
func (f *Fleet) resync(ctx context.Context) {
	began := time.Now()
	nonce := fmt.Appendf(nil, "%s %d", f.opts.Replica, began.UnixNano())
	back := make(chan string, 2)
	var retained atomic.Int64
	h := func(ctx context.Context, msg *bus.Message) {
		if id, _, ok := app.InstanceOf(msg.Topic); ok && id == resyncInstance {
			if string(msg.Payload) == string(nonce) {
				select {
				case back <- msg.Topic:
				default: // a duplicate
				}
			}
			return
		}
		if !msg.Retain {
			return
		}
		retained.Add(1)
		f.ingest.handle(ctx, msg)
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
	// A marker sent before the broker had the subscription (the link was
	// down, and the bus sent it first when it came up) never comes back:
	// they are sent again each second; any that comes back is behind the
	// retained reports.
	pending := map[string]bool{app.StatusTopic(resyncInstance): true, app.PresenceTopic(resyncInstance): true}
	send := func() {
		for topic := range pending {
			if err := f.bus.Publish(ctx, &bus.Message{Topic: topic, Payload: nonce, QoS: bus.AtLeastOnce}); err != nil && ctx.Err() == nil {
				f.log.Warn("fleet: reading the retained reports: the marker", "topic", topic, "err", err)
			}
		}
	}
	send()
	again := time.NewTicker(time.Second)
	defer again.Stop()
	limit := time.NewTimer(time.Minute)
	defer limit.Stop()
wait:
	for len(pending) > 0 {
		select {
		case topic := <-back:
			delete(pending, topic)
		case <-again.C:
			send()
		case <-limit.C:
			f.log.Warn("fleet: reading the retained reports: the markers did not come back in a minute; going on with what came", "reports", retained.Load())
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	for _, s := range subs {
		_ = s.Unsubscribe(context.WithoutCancel(ctx))
	}
	f.log.Info("fleet: read the retained reports", "reports", retained.Load(), "took", time.Since(began).Round(time.Millisecond))
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
