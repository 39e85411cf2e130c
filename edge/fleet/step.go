package fleet

import (
	"cmp"
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/edgekit/edgekit/edge/app"
)

// step is one turn of the lease holder: targets follow their instances'
// reports and time bounds, running deployments go through their waves,
// aborted ones put their instances back, instances whose labels or
// configuration changed get their document, and instances on an older
// revision than theirs are sent it again.
func (l *leader) step(ctx context.Context) (reload bool, err error) {
	now := l.f.now()
	var p plan
	deps := l.sortedDeployments()
	for _, d := range deps {
		if d.State == DeploymentRunning && d.Waves == nil {
			l.planDeployment(&p, d)
			if p.planned == nil {
				p.planned = map[string]bool{}
			}
			p.planned[d.ID] = true
		}
	}
	for _, d := range deps {
		l.followTargets(&p, d, now)
	}
	for _, d := range deps {
		switch d.State {
		case DeploymentRunning:
			l.advance(ctx, &p, d, now)
		case DeploymentAborted:
			l.rollBack(ctx, &p, d)
		case DeploymentCancelled:
			l.cancelQueued(&p, d)
		}
	}
	l.reassign(ctx, &p)
	reload, err = l.commit(ctx, &p)
	if err != nil || reload {
		return reload, err
	}
	l.republish(ctx, now)
	return false, nil
}

func (l *leader) sortedDeployments() []*Deployment {
	out := make([]*Deployment, 0, len(l.deployments))
	for _, r := range l.deployments {
		d := r.v
		out = append(out, &d)
	}
	slices.SortFunc(out, olderFirst)
	return out
}

// olderFirst orders deployments by creation, then id.
func olderFirst(a, b *Deployment) int {
	return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
}

// winner is the deployment an instance should run: of those matching its
// labels and not given up (aborted, cancelled, superseded), the highest
// priority, the newest (by Created, then id) among equals. nil when none
// matches.
func (l *leader) winner(id string) *Deployment {
	in, ok := l.instances[id]
	if !ok {
		return nil
	}
	var best *Deployment
	for _, r := range l.deployments {
		d := r.v
		if d.State == DeploymentAborted || d.State == DeploymentCancelled || d.State == DeploymentSuperseded {
			continue
		}
		if sel, ok := l.selectors[d.ID]; !ok || !sel.Matches(in.Labels) {
			continue
		}
		if best == nil || d.Priority > best.Priority || d.Priority == best.Priority && olderFirst(best, &d) < 0 {
			best = &d
		}
	}
	return best
}

// planDeployment makes a new deployment's targets, in waves: every
// instance it wins, in an order fixed by a hash of the deployment and the
// instance (so no instance is always first), and supersedes what the other
// deployments had not sent those instances yet.
func (l *leader) planDeployment(p *plan, d *Deployment) {
	var ids []string
	for id := range l.instances {
		if w := l.winner(id); w != nil && w.ID == d.ID {
			ids = append(ids, id)
		}
	}
	order := func(id string) uint64 {
		h := fnv.New64a()
		h.Write([]byte(d.ID + "/" + id))
		return h.Sum64()
	}
	slices.SortFunc(ids, func(a, b string) int { return cmp.Or(cmp.Compare(order(a), order(b)), cmp.Compare(a, b)) })
	d.Waves = d.Policy.waveSizes(len(ids))
	wave, inWave := 0, 0
	for _, id := range ids {
		for wave < len(d.Waves) && inWave == d.Waves[wave] {
			wave, inWave = wave+1, 0
		}
		inWave++
		l.putTarget(p, Target{Deployment: d.ID, Instance: id, Wave: wave, State: TargetQueued, Previous: l.desired[id].v.Deployment})
		l.supersedeQueued(p, id, d.ID)
	}
	if d.Waves == nil {
		d.Waves = []int{}
	}
	l.putDeployment(p, *d)
}

// supersedeQueued ends the targets other deployments have for instance id
// that were never sent: id is now deployment by's.
func (l *leader) supersedeQueued(p *plan, id, by string) {
	for dep, ts := range l.targets {
		if dep == by {
			continue
		}
		if t, ok := ts[id]; ok && t.v.State == TargetQueued {
			n := t.v
			n.State, n.Reason = TargetSuperseded, "deployment "+by+" took the instance before this one reached it"
			l.putTarget(p, n)
		}
	}
}

// followTargets moves d's targets by what their instances reported and
// by the time bounds of d's policy.
func (l *leader) followTargets(p *plan, d *Deployment, now time.Time) {
	for _, r := range l.targets[d.ID] {
		t := r.v
		if t.Revision == 0 || (t.State.final() && t.State != TargetSucceeded) {
			continue
		}
		if n := l.targetNow(t, d, now); n != t {
			l.putTarget(p, n)
		}
	}
}

// targetNow is t as the instance's report and the clock say.
func (l *leader) targetNow(t Target, d *Deployment, now time.Time) Target {
	rep := l.reports[t.Instance]
	if st := rep.Status; st != nil {
		switch {
		case st.Revision > t.Revision && st.Deployment != d.ID && t.State != TargetSucceeded:
			t.State, t.Reason = TargetSuperseded, fmt.Sprintf("the instance took revision %d of deployment %s", st.Revision, st.Deployment)
			return t
		case st.Revision >= t.Revision && st.Deployment == d.ID:
			t.Heard = maxTime(t.Heard, st.Time)
			switch st.Outcome {
			case app.OutcomeSucceeded:
				t.State, t.Code, t.Reason = TargetSucceeded, "", ""
				return t
			case app.OutcomeRolledBack, app.OutcomeRollbackFailed, app.OutcomeRejected:
				t.State, t.Code, t.Reason = TargetFailed, st.Code, failureReason(st)
				return t
			case app.OutcomeInProgress:
				t.State = TargetApplying
				for _, a := range st.Apps {
					if a.Phase == app.PhaseDownloading || a.Phase == app.PhasePending {
						t.State = TargetDownloading
					}
				}
			}
		}
	}
	if t.State == TargetSucceeded {
		return t
	}
	switch {
	case now.Sub(t.Sent) >= d.Policy.timeout():
		t.State, t.Reason = TargetTimedOut, fmt.Sprintf("no final report within %v of the document being sent", d.Policy.timeout())
	case !rep.PresenceTime.IsZero() && !rep.Online:
		t.State, t.Reason = TargetUnknown, "the instance is offline"
	case now.Sub(maxTime(t.Sent, t.Heard)) >= d.Policy.reportTimeout():
		t.State, t.Reason = TargetUnknown, fmt.Sprintf("nothing heard about revision %d for %v", t.Revision, d.Policy.reportTimeout())
	case t.State == TargetUnknown:
		t.State, t.Reason = TargetSent, ""
	}
	return t
}

func failureReason(st *app.Status) string {
	reason := st.Reason
	for _, a := range st.Apps {
		if a.Reason != "" && !strings.Contains(reason, a.Reason) && (a.Phase == app.PhaseFailed || a.Phase == app.PhaseRolledBack) {
			reason += fmt.Sprintf("; app %s %s: %s", a.App, a.Phase, a.Reason)
		}
	}
	return fmt.Sprintf("%s: %s", st.Outcome, reason)
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// advance runs d's current wave: it sends the wave's queued instances
// (within MaxPerMinute), and when the wave meets its success threshold
// and has baked, moves to the next; a breached failure threshold, or a
// wave that finished short of success, aborts or pauses d.
func (l *leader) advance(ctx context.Context, p *plan, d *Deployment, now time.Time) {
	if d.Waves == nil || p.planned[d.ID] {
		return // its targets are written in this step: it starts at the next
	}
	changed := false
	for d.State == DeploymentRunning && d.Wave < len(d.Waves) {
		var members []Target
		for _, r := range l.targets[d.ID] {
			if r.v.Wave == d.Wave && r.v.State != TargetSuperseded && r.v.State != TargetCancelled {
				members = append(members, r.v)
			}
		}
		slices.SortFunc(members, func(a, b Target) int { return cmp.Compare(a.Instance, b.Instance) })
		sent := l.sendQueued(ctx, p, d, members, now)
		changed = changed || sent
		var ok, failed, pending int
		var firstFailure *Target
		for i := range members {
			switch members[i].State {
			case TargetSucceeded:
				ok++
			case TargetFailed, TargetTimedOut:
				failed++
				if firstFailure == nil {
					firstFailure = &members[i]
				}
			default:
				pending++
			}
		}
		n := len(members)
		pol := &d.Policy
		if n > 0 && failed > 0 && ok+failed >= max(pol.MinSample, 1) && float64(failed)*100 >= pol.FailurePercent*float64(n) {
			l.fail(d, fmt.Sprintf("wave %d: %d of %d instances failed (the first, %s: %s %s)", d.Wave+1, failed, n, firstFailure.Instance, firstFailure.State, firstFailure.Reason))
			changed = true
			break
		}
		if n > 0 && float64(ok)*100 < pol.successPercent()*float64(n) {
			if pending == 0 {
				l.fail(d, fmt.Sprintf("wave %d: %d of %d instances succeeded, %v%% needed", d.Wave+1, ok, n, pol.successPercent()))
				changed = true
			}
			break
		}
		if d.BakedAt.IsZero() {
			d.BakedAt, changed = now, true
		}
		if now.Sub(d.BakedAt) < time.Duration(pol.Bake) {
			break
		}
		d.Wave, d.BakedAt, changed = d.Wave+1, time.Time{}, true
	}
	if d.State == DeploymentRunning && d.Wave >= len(d.Waves) {
		d.State, d.Reason, changed = DeploymentSucceeded, fmt.Sprintf("%d waves passed", len(d.Waves)), true
	}
	if changed {
		l.putDeployment(p, *d)
	}
}

// sendQueued sends the queued members of a wave, as many as
// MaxPerMinute leaves room for. It reports whether d changed.
func (l *leader) sendQueued(ctx context.Context, p *plan, d *Deployment, members []Target, now time.Time) bool {
	changed := false
	recent := d.Started[:0]
	for _, t := range d.Started {
		if now.Sub(t) < time.Minute {
			recent = append(recent, t)
		}
	}
	if len(recent) != len(d.Started) {
		d.Started, changed = recent, true
	}
	// MaxPerMinute bounds the sends in any minute, and, so that they
	// spread over it, in any second to a sixtieth of it (at least one).
	perSecond := (d.Policy.MaxPerMinute + 59) / 60
	lastSecond := 0
	for _, t := range d.Started {
		if now.Sub(t) < time.Second {
			lastSecond++
		}
	}
	for _, t := range members {
		if t.State != TargetQueued {
			continue
		}
		if d.Policy.MaxPerMinute > 0 && (len(d.Started) >= d.Policy.MaxPerMinute || lastSecond >= perSecond) {
			break
		}
		t.State, t.Sent, t.Heard, t.Code, t.Reason = TargetSent, now, time.Time{}, "", ""
		t.Previous = l.desired[t.Instance].v.Deployment
		t.Revision = l.desired[t.Instance].v.Revision + 1
		if err := l.send(ctx, p, t.Instance, d, t); err != nil {
			if err != errSentThisStep {
				l.f.log.Error("fleet: a document cannot be made", "deployment", d.ID, "instance", t.Instance, "err", err)
				t.State, t.Reason = TargetFailed, err.Error()
				l.putTarget(p, t)
			}
			continue
		}
		if d.Policy.MaxPerMinute > 0 {
			d.Started = append(d.Started, now)
			lastSecond++
			changed = true
		}
	}
	return changed
}

// fail acts on a breached threshold as the policy says.
func (l *leader) fail(d *Deployment, reason string) {
	if d.Policy.OnFailure == "pause" {
		d.State, d.Reason = DeploymentPaused, reason
		return
	}
	d.State, d.Reason = DeploymentAborted, reason
}

// rollBack puts every instance that an aborted deployment reached, and
// that still has its document, back on its previous deployment; instances
// it never reached are cancelled.
func (l *leader) rollBack(ctx context.Context, p *plan, d *Deployment) {
	for _, id := range sortedKeys(l.targets[d.ID]) {
		t := l.targets[d.ID][id].v
		switch t.State {
		case TargetQueued:
			t.State, t.Reason = TargetCancelled, "the deployment was aborted before this instance's wave: "+d.Reason
			l.putTarget(p, t)
			continue
		case TargetCancelled, TargetRolledBack, TargetSuperseded:
			continue
		}
		if l.desired[id].v.Deployment != d.ID {
			t.State, t.Reason = TargetSuperseded, "another deployment took the instance"
			l.putTarget(p, t)
			continue
		}
		var prev *Deployment
		if r, ok := l.deployments[t.Previous]; ok {
			pd := r.v
			prev = &pd
		}
		if t.Reason != "" {
			t.Reason = fmt.Sprintf("%s; the deployment was aborted: %s", t.Reason, d.Reason)
		} else {
			t.Reason = "the deployment was aborted: " + d.Reason
		}
		t.State = TargetRolledBack
		if err := l.send(ctx, p, id, prev, t); err != nil && err != errSentThisStep {
			l.f.log.Error("fleet: the previous deployment's document cannot be made", "deployment", d.ID, "instance", id, "previous", t.Previous, "err", err)
		}
	}
}

func (l *leader) cancelQueued(p *plan, d *Deployment) {
	for _, r := range l.targets[d.ID] {
		if t := r.v; t.State == TargetQueued {
			t.State, t.Reason = TargetCancelled, d.Reason
			l.putTarget(p, t)
		}
	}
}

// reassign looks at the instances whose labels, groups or configuration
// changed: one that another deployment now wins joins that deployment's
// current wave; one whose document changed (its configuration) gets the
// new revision. An instance no deployment matches keeps what it runs.
func (l *leader) reassign(ctx context.Context, p *plan) {
	for _, id := range sortedKeys(l.dirty) {
		delete(l.dirty, id)
		w := l.winner(id)
		if w == nil {
			continue
		}
		cur := l.desired[id].v
		if w.ID != cur.Deployment {
			if _, ok := l.targets[w.ID][id]; !ok && w.Waves != nil {
				t := Target{Deployment: w.ID, Instance: id, Wave: min(w.Wave, max(len(w.Waves)-1, 0)), State: TargetQueued, Previous: cur.Deployment}
				if w.State == DeploymentSucceeded {
					t.State, t.Sent, t.Revision = TargetSent, l.f.now(), cur.Revision+1
					if err := l.send(ctx, p, id, w, t); err != nil && err != errSentThisStep {
						l.f.log.Error("fleet: a document cannot be made", "deployment", w.ID, "instance", id, "err", err)
					}
					continue
				}
				l.putTarget(p, t)
			}
			continue
		}
		doc, err := l.f.document(ctx, l, w.ID, w.Apps, id, cur.Revision)
		if err != nil || string(doc) == string(cur.Document) {
			continue
		}
		var ts []Target
		if r, ok := l.targets[w.ID][id]; ok && r.v.State != TargetRolledBack && r.v.State != TargetSuperseded {
			t := r.v
			t.Revision = cur.Revision + 1
			ts = append(ts, t)
		}
		if err := l.send(ctx, p, id, w, ts...); err != nil && err != errSentThisStep {
			l.f.log.Error("fleet: a document cannot be made", "deployment", w.ID, "instance", id, "err", err)
		}
	}
}

// republish sends the document again to each instance that reported an
// older revision after the last time it was sent (the broker lost it, or
// the instance missed it), and at a holder's first step to every instance
// not on its revision.
func (l *leader) republish(ctx context.Context, now time.Time) {
	var docs []*Desired
	for id, r := range l.desired {
		rep := l.reports[id]
		if rep.Status != nil && rep.Status.Revision >= r.v.Revision {
			continue
		}
		last, ok := l.published[id]
		if ok && !(rep.LastSeen.After(last) && now.Sub(last) >= l.f.opts.RepublishAfter) {
			continue
		}
		d := r.v
		docs = append(docs, &d)
	}
	l.publish(ctx, docs)
}
