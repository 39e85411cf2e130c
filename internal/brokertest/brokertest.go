// Package brokertest starts a real Mosquitto for tests, through edge/broker,
// on a free loopback port, and stops it when the test ends; Connect gives a
// test an mqttbus client of it.
//
// When mosquitto is not installed the test fails under CI (CI=true), where
// a real-component test must never be skipped, and is skipped elsewhere with
// the reason.
package brokertest

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/broker"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/internal/testenv"
)

// Start starts a broker with opts (DataDir and Listeners are filled in when
// empty: a temporary directory and 127.0.0.1 on a free port) and registers
// its Close with t.Cleanup.
func Start(t testing.TB, opts *broker.Options) *broker.Broker {
	t.Helper()
	var o broker.Options
	if opts != nil {
		o = *opts
	}
	if o.DataDir == "" {
		o.DataDir = DataDir(t)
	}
	if len(o.Listeners) == 0 {
		o.Listeners = []broker.Listener{{Address: "127.0.0.1:0"}}
	}
	if o.Logger == nil && testing.Verbose() {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	b, err := startRetrying(o)
	if errors.Is(err, broker.ErrNotInstalled) {
		Missing(t, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("closing broker: %v", err)
		}
	})
	return b
}

// Missing reports a missing real component (testenv.Missing).
func Missing(t testing.TB, err error) {
	t.Helper()
	testenv.Missing(t, err)
}

// Connect returns an mqttbus client of b that is connected, with a queue in
// a temporary directory unless o sets one and fast reconnects; it is closed
// when the test ends.
func Connect(t testing.TB, b *broker.Broker, o mqttbus.Options) *mqttbus.Client {
	t.Helper()
	o.Brokers = []string{b.URL().String()}
	if o.QueueDir == "" {
		o.QueueDir = t.TempDir()
	}
	if o.ReconnectMin == 0 {
		o.ReconnectMin, o.ReconnectMax = 20*time.Millisecond, 500*time.Millisecond
	}
	c, err := mqttbus.New(&o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.AwaitConnection(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// startRetrying starts a broker. A port picked free by edge/broker can be
// taken by another process before Mosquitto binds it; then it tries again
// with a new port (twice at most).
// DataDir returns a temporary directory for a broker's DataDir. Started
// as root, Mosquitto runs as another user, which must pass through the
// test's temporary directory (t.TempDir makes it 0700).
func DataDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
		t.Fatal(err)
	}
	return dir
}

func startRetrying(o broker.Options) (*broker.Broker, error) {
	for attempt := 0; ; attempt++ {
		b, err := broker.New(&o)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err = b.Start(ctx)
		cancel()
		if err == nil {
			return b, nil
		}
		_ = b.Close(context.Background())
		if attempt == 2 || !strings.Contains(err.Error(), "Address already in use") {
			return nil, err
		}
	}
}

// Buses runs test as two subtests: on an in-process bus (membus), and on an
// mqttbus client of a Mosquitto of its own. Each bus is closed when its
// subtest ends.
func Buses(t *testing.T, test func(t *testing.T, b bus.Bus)) {
	t.Helper()
	t.Run("membus", func(t *testing.T) {
		b := membus.New(nil)
		t.Cleanup(func() { _ = b.Close(context.Background()) })
		test(t, b)
	})
	t.Run("mqttbus", func(t *testing.T) {
		test(t, Connect(t, Start(t, nil), mqttbus.Options{}))
	})
}
