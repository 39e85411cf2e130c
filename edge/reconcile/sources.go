package reconcile

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus"
)

// WatchFile submits the deployment document at path when the reconciler
// starts and whenever its content changes, looking every interval (default
// 1 s), until ctx ends. A document that does not read is rejected in the
// status once per content; a missing file is no error. It returns when ctx
// ends.
func (r *Reconciler) WatchFile(ctx context.Context, path string, every time.Duration) error {
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var last [32]byte
	for {
		b, err := readBounded(path)
		switch {
		case err == nil:
			if sum := sha256.Sum256(b); sum != last {
				last = sum
				if err := r.SubmitDocument(b); err != nil && !errors.Is(err, ErrStale) {
					r.log.Warn("reconcile: the deployment file is refused", "path", path, "err", err)
				}
			}
		case !errors.Is(err, fs.ErrNotExist):
			r.log.Warn("reconcile: reading the deployment file", "path", path, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// readBounded reads a file of at most app.MaxDocument bytes.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, app.MaxDocument+1))
	if err == nil && len(b) > app.MaxDocument {
		err = fmt.Errorf("%s is over %d bytes", path, app.MaxDocument)
	}
	return b, err
}

// Subscribe submits each deployment document published on topic of b (a
// retained message with QoS 1, as the fleet publishes them). Documents
// that do not read are rejected in the status; revisions taken before
// (the retained message delivered again after each reconnect) are
// ignored.
func (r *Reconciler) Subscribe(ctx context.Context, b bus.Bus, topic string) (bus.Subscription, error) {
	return b.Subscribe(ctx, topic, func(_ context.Context, m *bus.Message) {
		if len(m.Payload) == 0 {
			return // a retained message cleared
		}
		if err := r.SubmitDocument(m.Payload); err != nil && !errors.Is(err, ErrStale) {
			r.log.Warn("reconcile: a deployment document is refused", "topic", m.Topic, "err", err)
		}
	}, &bus.SubscribeOptions{QoS: bus.AtLeastOnce})
}
