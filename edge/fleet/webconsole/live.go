package webconsole

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"time"

	"github.com/edgekit/edgekit/edge/fleet"
)

// live serves the deployments' event streams. One follower goroutine
// reads the fleet's rollout change feed every Options.Poll; for each
// deployment somebody watches it keeps the deployment and its targets in
// memory, applies what changed, renders the page's live fragment once
// per change (at most every half second) and hands the same bytes to
// every stream of it. A stream's cost
// is its writes; the fleet's, the changes.
type live struct {
	c    *Console
	done chan struct{} // closed by close

	mu      sync.Mutex // held while the follower reads and applies a batch, so a new watch's snapshot is never older than what follows it
	watches map[string]*watch
	mark    fleet.RolloutMark
	started bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closed  bool
}

// watch is one deployment being watched.
type watch struct {
	d       fleet.Deployment
	targets []fleet.Target
	index   map[string]int // instance → its place in targets
	subs    map[*subscriber]struct{}
	frame   []byte    // the last event sent
	dirty   bool      // changed since frame was rendered
	drawn   time.Time // when frame was rendered
}

// redraw is the shortest time between two renders of a watch: a rollout
// that changes every poll is drawn twice a second.
const redraw = 500 * time.Millisecond

// put takes in a target's newest record.
func (w *watch) put(t fleet.Target) {
	if i, ok := w.index[t.Instance]; ok {
		w.targets[i] = t
		return
	}
	w.index[t.Instance] = len(w.targets)
	w.targets = append(w.targets, t)
}

// subscriber is one stream; ch holds the newest event not yet written
// (an older one is replaced: a slow browser skips to the latest).
type subscriber struct {
	id string
	ch chan []byte
}

func newLive(c *Console) *live {
	return &live{c: c, done: make(chan struct{}), watches: map[string]*watch{}}
}

// subscribe starts a stream of deployment id: the first event now.
func (l *live) subscribe(ctx context.Context, id string) (*subscriber, []byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, nil, fleet.ErrClosed
	}
	if !l.started {
		// Catch up with the feed before the first snapshot, so that the
		// follower starts after it and not from the store's beginning.
		if err := l.poll(ctx); err != nil {
			return nil, nil, err
		}
		fctx, cancel := context.WithCancel(context.Background())
		l.started, l.cancel = true, cancel
		l.wg.Add(1)
		go l.follow(fctx)
	}
	w := l.watches[id]
	if w == nil {
		d, ts, err := l.c.f.Deployment(ctx, id)
		if err != nil {
			return nil, nil, err
		}
		w = &watch{d: d, targets: make([]fleet.Target, 0, len(ts)), index: make(map[string]int, len(ts)), subs: map[*subscriber]struct{}{}}
		for _, t := range ts {
			w.put(t)
		}
		w.frame, w.drawn = l.render(w), time.Now()
		l.watches[id] = w
	}
	s := &subscriber{id: id, ch: make(chan []byte, 1)}
	w.subs[s] = struct{}{}
	return s, w.frame, nil
}

// unsubscribe ends a stream; a deployment nobody watches is dropped.
func (l *live) unsubscribe(s *subscriber) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if w := l.watches[s.id]; w != nil {
		delete(w.subs, s)
		if len(w.subs) == 0 {
			delete(l.watches, s.id)
		}
	}
}

func (l *live) follow(ctx context.Context) {
	defer l.wg.Done()
	t := time.NewTicker(l.c.opts.Poll)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l.mu.Lock()
		err := l.poll(ctx)
		l.mu.Unlock()
		if err != nil && ctx.Err() == nil && !failing {
			l.c.log.Error("webconsole: reading the rollouts' changes (the live pages wait)", "err", err)
		}
		failing = err != nil
	}
}

// poll reads what changed since the mark and sends the new fragment of
// every watched deployment it touched; l.mu is held.
func (l *live) poll(ctx context.Context) error {
	ds, ts, mark, err := l.c.f.RolloutChanges(ctx, l.mark, func(id string) bool { return l.watches[id] != nil })
	if err != nil {
		return err
	}
	l.mark = mark
	for _, d := range ds {
		if w := l.watches[d.ID]; w != nil {
			w.d, w.dirty = d, true
		}
	}
	for _, t := range ts {
		if w := l.watches[t.Deployment]; w != nil {
			w.put(t)
			w.dirty = true
		}
	}
	now := time.Now()
	for _, w := range l.watches {
		if !w.dirty || now.Sub(w.drawn) < redraw {
			continue // drawn at a later poll
		}
		w.frame, w.drawn, w.dirty = l.render(w), now, false
		for s := range w.subs {
			select {
			case <-s.ch: // a stream that has not written the last one skips it
			default:
			}
			s.ch <- w.frame
		}
	}
	return nil
}

// render is a watch's event: its live fragment, as SSE data lines.
func (l *live) render(w *watch) []byte {
	var html bytes.Buffer
	if err := l.c.pages.live.Execute(&html, newProgress(w.d, w.targets, time.Now())); err != nil {
		l.c.log.Error("webconsole: rendering a deployment's progress", "deployment", w.d.ID, "err", err)
	}
	var b bytes.Buffer
	b.WriteString("event: progress\n")
	for _, line := range strings.Split(strings.TrimRight(html.String(), "\n"), "\n") {
		b.WriteString("data: ")
		b.WriteString(line)
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	return b.Bytes()
}

// close stops the follower and ends every stream.
func (l *live) close(ctx context.Context) error {
	l.mu.Lock()
	l.closed = true
	if l.cancel != nil {
		l.cancel()
	}
	close(l.done)
	l.mu.Unlock()
	stopped := make(chan struct{})
	go func() { l.wg.Wait(); close(stopped) }()
	select {
	case <-stopped:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
