package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/fleet/store"
)

// ingester takes the gateways' status and presence reports off the bus
// and writes them to the store in batches: the newest status per instance
// (by revision, then time), the newest presence, when last seen. Several
// replicas ingest at once, each a share of the reports; every write is
// conditional on the version read, so none overwrites a newer report
// another replica wrote.
type ingester struct {
	f     *Fleet
	queue chan incoming

	// Used by the writer goroutine only.
	known   map[string]bool           // instances registered
	reports map[string]record[Report] // the last written or read
}

type incoming struct {
	instance string
	status   *app.Status
	presence *app.Presence
	at       time.Time
}

func newIngester(f *Fleet) *ingester {
	return &ingester{f: f, queue: make(chan incoming, 4*f.opts.IngestBatch), known: map[string]bool{}, reports: map[string]record[Report]{}}
}

// handle is the subscriptions' handler: it checks a report and queues
// it, waiting for room (the bus holds back its acknowledgement meanwhile).
// A report that does not read is dropped and logged.
func (in *ingester) handle(ctx context.Context, msg *bus.Message) {
	rep, err := parseReport(msg.Topic, msg.Payload)
	if err != nil {
		if !errors.Is(err, errNoReport) {
			in.f.log.Warn("fleet: a report is dropped", "topic", msg.Topic, "err", err)
		}
		return
	}
	rep.at = in.f.now().UTC()
	select {
	case in.queue <- rep:
	case <-ctx.Done():
	}
}

// errNoReport: the message is none (a retained message cleared, a topic
// of another kind); nothing to say.
var errNoReport = errors.New("no report")

// parseReport reads a status or presence report off its topic: what
// comes from the network, checked before anything is kept of it.
func parseReport(topic string, payload []byte) (incoming, error) {
	id, kind, ok := app.InstanceOf(topic)
	if ok && id == resyncInstance {
		return incoming{}, errNoReport // a replica's marker (resync)
	}
	if !ok || !ValidInstance(id) {
		return incoming{}, fmt.Errorf("the topic %q names no instance", topic)
	}
	rep := incoming{instance: id}
	if len(payload) == 0 {
		return incoming{}, errNoReport
	}
	if len(payload) > app.MaxDocument {
		return incoming{}, fmt.Errorf("instance %s: a report of %d bytes, over the limit", id, len(payload))
	}
	switch kind {
	case "status":
		var st app.Status
		if err := json.Unmarshal(payload, &st); err != nil {
			return incoming{}, fmt.Errorf("instance %s: the status does not read: %w", id, err)
		}
		if st.Instance != id {
			return incoming{}, fmt.Errorf("instance %s: the status names instance %q", id, st.Instance)
		}
		rep.status = &st
	case "presence":
		var pr app.Presence
		if err := json.Unmarshal(payload, &pr); err != nil {
			return incoming{}, fmt.Errorf("instance %s: the presence does not read: %w", id, err)
		}
		if pr.Instance != id {
			return incoming{}, fmt.Errorf("instance %s: the presence names instance %q", id, pr.Instance)
		}
		rep.presence = &pr
	default:
		return incoming{}, errNoReport
	}
	return rep, nil
}

// run writes queued reports until ctx ends, then what is left.
func (in *ingester) run(ctx context.Context) {
	if err := in.load(ctx); err != nil && ctx.Err() == nil {
		in.f.log.Error("fleet: reading the reports", "err", err)
	}
	batch := map[string]incoming{}
	var order []string
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	flush := func(ctx context.Context) {
		if len(order) == 0 {
			return
		}
		in.write(ctx, batch, order)
		clear(batch)
		order = order[:0]
	}
	for {
		select {
		case rep := <-in.queue:
			if len(order) == 0 {
				timer.Reset(in.f.opts.IngestDelay)
			}
			if old, ok := batch[rep.instance]; ok {
				rep = mergeIncoming(old, rep)
			} else {
				order = append(order, rep.instance)
			}
			batch[rep.instance] = rep
			if len(order) >= in.f.opts.IngestBatch {
				timer.Stop()
				flush(ctx)
			}
		case <-timer.C:
			flush(ctx)
		case <-ctx.Done():
			timer.Stop()
			// What was taken off the bus is written before the end.
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			for {
				select {
				case rep := <-in.queue:
					if old, ok := batch[rep.instance]; ok {
						rep = mergeIncoming(old, rep)
					} else {
						order = append(order, rep.instance)
					}
					batch[rep.instance] = rep
					continue
				default:
				}
				break
			}
			flush(wctx)
			cancel()
			return
		}
	}
}

func (in *ingester) load(ctx context.Context) error {
	ins, err := list[Instance](ctx, in.f.st, collInstances, "", in.f.bad)
	if err != nil {
		return err
	}
	for _, r := range ins {
		in.known[r.v.ID] = true
	}
	reps, err := list[Report](ctx, in.f.st, collReports, "", in.f.bad)
	if err != nil {
		return err
	}
	for _, r := range reps {
		in.reports[r.v.Instance] = r
	}
	return nil
}

func mergeIncoming(a, b incoming) incoming {
	if b.status != nil && (a.status == nil || newerStatus(b.status, a.status)) {
		a.status = b.status
	}
	if b.presence != nil { // the later received
		a.presence = b.presence
	}
	a.at = maxTime(a.at, b.at)
	return a
}

func newerStatus(a, b *app.Status) bool {
	return a.Revision > b.Revision || a.Revision == b.Revision && !a.Time.Before(b.Time)
}

// merged is the report r with rep taken in; changed is false when rep
// adds nothing r has not.
func merged(r Report, rep incoming) (Report, bool) {
	changed := false
	if rep.status != nil && (r.Status == nil || newerStatus(rep.status, r.Status) && !sameJSON(rep.status, r.Status)) {
		r.Status, changed = rep.status, true
	}
	// Presence goes by when it was received, not by the time it carries:
	// a gateway's offline Will is written when it connects, so it carries
	// a time before the online it follows. Whatever comes on the topic is
	// the broker's latest, live or retained.
	if p := rep.presence; p != nil && (r.PresenceTime.IsZero() || !rep.at.Before(r.PresenceTime)) && (p.Online != r.Online || r.PresenceTime.IsZero()) {
		r.Online, r.PresenceTime, changed = p.Online, rep.at, true
	}
	if rep.at.After(r.LastSeen) {
		r.LastSeen, changed = rep.at, true
	}
	return r, changed
}

// write stores a batch: new instances registered, then every report in
// one Apply. A conflict (another replica wrote one of them) reads those
// again and tries once more, then goes one by one.
func (in *ingester) write(ctx context.Context, batch map[string]incoming, order []string) {
	for _, id := range order {
		if in.known[id] {
			continue
		}
		inst := Instance{ID: id, Created: in.f.now().UTC()}
		if _, err := in.f.st.Apply(ctx, store.Create(collInstances, id, encode(inst))); err != nil && !errors.Is(err, store.ErrConflict) {
			in.f.log.Error("fleet: registering an instance on its first report", "instance", id, "err", err)
			continue
		}
		in.known[id] = true
	}
	for attempt := 0; attempt < 2; attempt++ {
		ops, recs := in.ops(batch, order)
		if len(ops) == 0 {
			return
		}
		v, err := in.f.st.Apply(ctx, ops...)
		if err == nil {
			for _, r := range recs {
				in.reports[r.Instance] = record[Report]{v: r, version: v}
			}
			return
		}
		if !errors.Is(err, store.ErrConflict) {
			in.f.log.Error("fleet: writing reports (they are taken again from the next reports and the retained ones)", "reports", len(ops), "err", err)
			return
		}
		in.refresh(ctx, order)
	}
	for _, id := range order { // one by one
		for {
			ops, recs := in.ops(batch, []string{id})
			if len(ops) == 0 {
				break
			}
			v, err := in.f.st.Apply(ctx, ops...)
			if err == nil {
				in.reports[id] = record[Report]{v: recs[0], version: v}
				break
			}
			if !errors.Is(err, store.ErrConflict) {
				in.f.log.Error("fleet: writing a report", "instance", id, "err", err)
				break
			}
			in.refresh(ctx, []string{id})
		}
	}
}

func (in *ingester) ops(batch map[string]incoming, order []string) ([]store.Op, []Report) {
	var ops []store.Op
	var recs []Report
	for _, id := range order {
		old := in.reports[id]
		base := old.v
		base.Instance = id
		r, changed := merged(base, batch[id])
		if !changed {
			continue
		}
		if significant(base.Status, r.Status) && r.Status != nil {
			ops = append(ops, historyOp(id, r.Changes, r.Status))
			r.Changes++
		}
		ops = append(ops, store.Replace(collReports, id, encode(r), old.version))
		recs = append(recs, r)
	}
	return ops, recs
}

func (in *ingester) refresh(ctx context.Context, ids []string) {
	for _, id := range ids {
		r, err := get[Report](ctx, in.f.st, collReports, id)
		switch {
		case err == nil:
			in.reports[id] = r
		case errors.Is(err, ErrNotFound):
			delete(in.reports, id)
		default:
			in.f.log.Error("fleet: reading a report", "instance", id, "err", fmt.Errorf("%w", err))
		}
	}
}
