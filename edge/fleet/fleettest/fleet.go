package fleettest

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/edge/fleet"
	"github.com/edgekit/edgekit/edge/fleet/store"
	"github.com/edgekit/edgekit/edge/fleet/store/boltstore"
)

// New returns a fleet for a test: on an in-process bus (for simulated
// gateways to join) and an embedded store in a temporary directory, which
// opts' Store and Bus are set to; Tick is 10 ms unless opts sets one. The
// bus and the store are closed when the test ends; Run the fleet to have
// it work.
func New(tb testing.TB, opts *fleet.Options) (*fleet.Fleet, bus.Bus, store.Store) {
	tb.Helper()
	ctx := context.Background()
	b := membus.New(nil)
	tb.Cleanup(func() { _ = b.Close(ctx) })
	st, err := boltstore.Open(filepath.Join(tb.TempDir(), "fleet.db"), &boltstore.Options{NoSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close(ctx) })
	var o fleet.Options
	if opts != nil {
		o = *opts
	}
	o.Store, o.Bus = st, b
	if o.Tick == 0 {
		o.Tick = 10 * time.Millisecond
	}
	f, err := fleet.New(&o)
	if err != nil {
		tb.Fatal(err)
	}
	return f, b, st
}

// Run runs f until the test ends, then closes it; a Run or Close that
// fails fails the test. A Run that finds f closed (a short test can end,
// and close it, before the goroutine gets to Run) has nothing to report.
func Run(tb testing.TB, f *fleet.Fleet) {
	tb.Helper()
	done := make(chan error, 1)
	go func() { done <- f.Run(context.Background()) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := f.Close(ctx); err != nil {
			tb.Errorf("closing the fleet: %v", err)
		}
		if err := <-done; err != nil && !errors.Is(err, fleet.ErrClosed) {
			tb.Errorf("the fleet's Run: %v", err)
		}
	})
}
