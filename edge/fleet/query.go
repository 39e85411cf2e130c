package fleet

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/fleet/store"
)

// InstanceQuery picks a page of instances.
type InstanceQuery struct {
	// Selector matches the instances' labels ("" all).
	Selector string
	// Presence is online, offline or unknown ("" any).
	Presence string
	// Rollout is current (it runs its desired revision), behind (it does
	// not yet) or failed (its last deployment failed or was rolled back);
	// "" any.
	Rollout string
	// After is the last id of the page before ("" the first page); Limit
	// bounds the page (0: no bound).
	After string
	Limit int
}

// InstancePage is a page of instances in id order.
type InstancePage struct {
	Instances []InstanceView `json:"instances"`
	// Matched counts every instance the query matches, on all pages.
	Matched int `json:"matched"`
	// Next is the After of the next page ("" this is the last).
	Next string `json:"next,omitempty"`
}

// QueryInstances returns a page of the instances a query matches.
func (f *Fleet) QueryInstances(ctx context.Context, q InstanceQuery) (InstancePage, error) {
	sel, err := ParseSelector(q.Selector)
	if err != nil {
		return InstancePage{}, err
	}
	switch q.Presence {
	case "", "online", "offline", "unknown":
	default:
		return InstancePage{}, fmt.Errorf("%w: presence %q: want online, offline or unknown", ErrInvalid, q.Presence)
	}
	switch q.Rollout {
	case "", "current", "behind", "failed":
	default:
		return InstancePage{}, fmt.Errorf("%w: rollout %q: want current, behind or failed", ErrInvalid, q.Rollout)
	}
	// The filters read a summary of each report (without its apps) and
	// the desired revision alone; only the page's reports are decoded
	// whole. A fleet of 10,000 answers a page in a fraction of the time
	// Instances takes.
	ins, err := list[Instance](ctx, f.st, collInstances, "", f.bad)
	if err != nil {
		return InstancePage{}, err
	}
	reps, err := f.st.List(ctx, collReports, "")
	if err != nil {
		return InstancePage{}, err
	}
	rawReport := make(map[string][]byte, len(reps))
	for _, r := range reps {
		rawReport[r.Key] = r.Value
	}
	des, err := list[desiredRevision](ctx, f.st, collDesired, "", f.bad)
	if err != nil {
		return InstancePage{}, err
	}
	desOf := make(map[string]uint64, len(des))
	for _, d := range des {
		desOf[d.v.Instance] = d.v.Revision
	}
	page := InstancePage{Instances: []InstanceView{}}
	for _, in := range ins {
		if !sel.Matches(in.v.Labels) {
			continue
		}
		raw := rawReport[in.v.ID]
		if q.Presence != "" || q.Rollout != "" {
			var sum reportSummary
			if raw != nil && json.Unmarshal(raw, &sum) != nil {
				raw = nil // damaged: the instance shows as never heard from
			}
			v := view(in.v, sum.report(), desOf[in.v.ID])
			if q.Presence != "" && v.Presence != q.Presence || !rolloutIs(v, q.Rollout) {
				continue
			}
		}
		page.Matched++
		if in.v.ID <= q.After {
			continue
		}
		if q.Limit > 0 && len(page.Instances) == q.Limit {
			page.Next = page.Instances[len(page.Instances)-1].ID
			continue
		}
		var rep Report
		if raw != nil {
			if err := json.Unmarshal(raw, &rep); err != nil {
				f.bad(store.Record{Collection: collReports, Key: in.v.ID, Value: raw}, err)
				rep = Report{}
			}
		}
		page.Instances = append(page.Instances, view(in.v, rep, desOf[in.v.ID]))
	}
	return page, nil
}

// desiredRevision is a desired record without its document.
type desiredRevision struct {
	Instance string `json:"instance"`
	Revision uint64 `json:"revision"`
}

// reportSummary is a report without its apps: what the filters read.
type reportSummary struct {
	Online       bool      `json:"online"`
	PresenceTime time.Time `json:"presenceTime"`
	Status       *struct {
		Revision uint64      `json:"revision"`
		Outcome  app.Outcome `json:"outcome"`
		Running  *app.Ref    `json:"running"`
	} `json:"status"`
}

func (s reportSummary) report() Report {
	r := Report{Online: s.Online, PresenceTime: s.PresenceTime}
	if s.Status != nil {
		r.Status = &app.Status{Revision: s.Status.Revision, Outcome: s.Status.Outcome, Running: s.Status.Running}
	}
	return r
}

func rolloutIs(v InstanceView, want string) bool {
	switch want {
	case "current":
		return v.Current
	case "behind":
		return !v.Current
	case "failed":
		return v.Status != nil && (v.Status.Outcome == app.OutcomeRolledBack || v.Status.Outcome == app.OutcomeRollbackFailed || v.Status.Outcome == app.OutcomeRejected)
	}
	return true
}

// Instance returns one instance with what the fleet knows of it.
func (f *Fleet) Instance(ctx context.Context, id string) (InstanceView, error) {
	in, err := get[Instance](ctx, f.st, collInstances, id)
	if err != nil {
		return InstanceView{}, err
	}
	rep, err := get[Report](ctx, f.st, collReports, id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return InstanceView{}, err
	}
	des, err := get[desiredRevision](ctx, f.st, collDesired, id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return InstanceView{}, err
	}
	return view(in.v, rep.v, des.v.Revision), nil
}

// historySlots is how many status changes the fleet keeps per instance.
const historySlots = 32

// StatusHistory returns an instance's last status changes (a change of
// revision, outcome, code, running deployment, or an app's version,
// phase or code; not a heartbeat), newest first.
func (f *Fleet) StatusHistory(ctx context.Context, id string) ([]app.Status, error) {
	if _, err := get[Instance](ctx, f.st, collInstances, id); err != nil {
		return nil, err
	}
	hs, err := list[historyEntry](ctx, f.st, collHistory, id+"/", f.bad)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(hs, func(a, b record[historyEntry]) int { return cmp.Compare(b.v.Seq, a.v.Seq) }) // newest first
	out := make([]app.Status, len(hs))
	for i, h := range hs {
		out[i] = h.v.Status
	}
	return out, nil
}

// historyEntry is one slot of an instance's ring of statuses.
type historyEntry struct {
	Seq    uint64     `json:"seq"`
	Status app.Status `json:"status"`
}

// significant reports whether status b says something a did not: what
// the history keeps (a heartbeat or a download's progress is not).
func significant(a, b *app.Status) bool {
	if a == nil || b == nil {
		return a != b
	}
	if a.Deployment != b.Deployment || a.Revision != b.Revision || a.Outcome != b.Outcome || a.Code != b.Code ||
		(a.Running == nil) != (b.Running == nil) || a.Running != nil && *a.Running != *b.Running || len(a.Apps) != len(b.Apps) {
		return true
	}
	for i := range a.Apps {
		x, y := a.Apps[i], b.Apps[i]
		if x.App != y.App || x.Version != y.Version || x.Phase != y.Phase || x.Code != y.Code {
			return true
		}
	}
	return false
}

// historyOp is the write that keeps status s as instance id's change
// number seq.
func historyOp(id string, seq uint64, s *app.Status) store.Op {
	return store.Put(collHistory, fmt.Sprintf("%s/%02d", id, seq%historySlots), encode(historyEntry{Seq: seq, Status: *s}))
}

// RolloutMark is where a reader of RolloutChanges is in the store's
// change feed; the zero mark is its start.
type RolloutMark struct {
	Deployments, Targets uint64
}

// RolloutChanges returns the deployments and targets written after mark
// that watch selects by deployment id (nil: all), and the mark to ask from
// next. A console follows rollouts with it at the cost of what changed,
// not of the fleet's size: records of other deployments are not decoded.
func (f *Fleet) RolloutChanges(ctx context.Context, mark RolloutMark, watch func(deployment string) bool) ([]Deployment, []Target, RolloutMark, error) {
	ds, dm, err := changes[Deployment](ctx, f, collDeployments, mark.Deployments, func(key string) bool { return watch == nil || watch(key) })
	if err != nil {
		return nil, nil, mark, err
	}
	ts, tm, err := changes[Target](ctx, f, collTargets, mark.Targets, func(key string) bool {
		d, _, _ := strings.Cut(key, "/")
		return watch == nil || watch(d)
	})
	if err != nil {
		return nil, nil, mark, err
	}
	return ds, ts, RolloutMark{Deployments: dm, Targets: tm}, nil
}

// changes reads coll's records written after version after whose keys
// keep selects, all of them.
func changes[T any](ctx context.Context, f *Fleet, coll string, after uint64, keep func(key string) bool) ([]T, uint64, error) {
	const page = 4096
	var out []T
	for {
		rs, err := f.st.Changes(ctx, coll, after, page)
		if err != nil {
			return nil, after, err
		}
		n := len(rs)
		if n > 0 {
			after = rs[n-1].Version
		}
		rs = slices.DeleteFunc(rs, func(r store.Record) bool { return !keep(r.Key) })
		for _, r := range decodeAll[T](rs, f.bad) {
			out = append(out, r.v)
		}
		if n < page {
			return out, after, nil
		}
	}
}

// Now is the fleet's clock (Options.Now).
func (f *Fleet) Now() time.Time { return f.now() }
