package reconcile

import (
	"encoding/json"
	"maps"
	"slices"
	"time"

	"github.com/edgekit/edgekit/edge/app"
)

// changedApps returns the apps of d whose version or configuration differ
// from how last has them (all of them when last is nil).
func changedApps(last, d *app.Deployment) map[string]bool {
	out := map[string]bool{}
	for _, a := range d.Apps {
		before, ok := app.Assignment{}, false
		if last != nil {
			before, ok = last.Find(a.App.Name)
		}
		if !ok || !sameAssignment(before, a) {
			out[a.App.Name] = true
		}
	}
	return out
}

func sameAssignment(a, b app.Assignment) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// begin makes d the status's deployment: its changed apps pending, the
// others running, and the apps last has that d leaves out, still running
// until they are removed.
func (r *Reconciler) begin(d, last *app.Deployment, changed map[string]bool) {
	now := time.Now().UTC()
	r.mu.Lock()
	before := map[string]app.AppStatus{}
	for _, a := range r.status.Apps {
		before[a.App] = a
	}
	r.status.Deployment, r.status.Revision = d.ID, d.Revision
	r.status.Outcome, r.status.Code, r.status.Reason = app.OutcomeInProgress, "", ""
	r.status.Apps = r.status.Apps[:0:0]
	for _, a := range d.Apps {
		st := app.AppStatus{App: a.App.Name, Kind: a.App.Kind, Version: a.Version.Version, Phase: app.PhaseRunning, Since: now}
		if changed[a.App.Name] {
			st.Phase = app.PhasePending
		} else if b, ok := before[a.App.Name]; ok && b.Phase == app.PhaseRunning {
			st.Since = b.Since
		}
		r.status.Apps = append(r.status.Apps, st)
	}
	if last != nil {
		for _, a := range last.Apps {
			if _, ok := d.Find(a.App.Name); !ok {
				r.status.Apps = append(r.status.Apps, app.AppStatus{App: a.App.Name, Kind: a.App.Kind, Version: a.Version.Version, Phase: app.PhaseRunning, Since: now})
			}
		}
	}
	r.status.Time = now
	r.mu.Unlock()
	r.publish(nil)
}

// reject reports a deployment that broke a rule; the apps' phases are
// those of what runs, unchanged.
func (r *Reconciler) reject(ref app.Ref, err error) {
	_, code := codeOf(err, app.CodeInvalid)
	r.mu.Lock()
	r.status.Deployment, r.status.Revision = ref.Deployment, ref.Revision
	r.status.Outcome, r.status.Code, r.status.Reason = app.OutcomeRejected, code, err.Error()
	r.status.Time = time.Now().UTC()
	r.mu.Unlock()
	r.publish(nil)
}

// finish sets the deployment's outcome.
func (r *Reconciler) finish(outcome app.Outcome, code, reason string) {
	r.mu.Lock()
	r.status.Outcome, r.status.Code, r.status.Reason = outcome, code, reason
	r.status.Time = time.Now().UTC()
	r.mu.Unlock()
	r.publish(nil)
}

// setRunning records d as what the apps run.
func (r *Reconciler) setRunning(d *app.Deployment) {
	r.mu.Lock()
	r.status.Running = &app.Ref{Deployment: d.ID, Revision: d.Revision}
	r.mu.Unlock()
	r.publish(nil)
}

// setApp changes one app's status and publishes it; a phase change is
// stamped and added to the app's history.
func (r *Reconciler) setApp(name string, f func(*app.AppStatus)) {
	r.mu.Lock()
	i := slices.IndexFunc(r.status.Apps, func(a app.AppStatus) bool { return a.App == name })
	if i < 0 {
		r.mu.Unlock()
		return
	}
	st := &r.status.Apps[i]
	before := st.Phase
	f(st)
	changed := st.Phase != before
	if changed {
		st.Since = time.Now().UTC()
		if st.Phase != app.PhaseDownloading {
			st.Progress = nil
		}
	}
	r.status.Time = time.Now().UTC()
	snapshot := *st
	r.mu.Unlock()
	if changed {
		r.publish(&snapshot)
		return
	}
	r.publish(nil)
}

// phase moves the named apps to p.
func (r *Reconciler) phase(names map[string]bool, p app.Phase) {
	for _, name := range slices.Sorted(maps.Keys(names)) {
		r.setApp(name, func(st *app.AppStatus) { st.Phase, st.Code, st.Reason = p, "", "" })
	}
}

// markFailed marks the app that failed (when one is named).
func (r *Reconciler) markFailed(name, code string, err error) {
	if name == "" {
		return
	}
	r.setApp(name, func(st *app.AppStatus) { st.Phase, st.Code, st.Reason = app.PhaseFailed, code, err.Error() })
}

// revert reports the apps a failed deployment d changed as put back to
// last: rolled back to last's version, or removed where last has none.
// The app that failed keeps its failure.
func (r *Reconciler) revert(d, last *app.Deployment, changed map[string]bool) {
	for _, name := range slices.Sorted(maps.Keys(changed)) {
		a, _ := d.Find(name)
		prev, ok := app.Assignment{}, false
		if last != nil {
			prev, ok = last.Find(name)
		}
		r.setApp(name, func(st *app.AppStatus) {
			failed := st.Phase == app.PhaseFailed
			switch {
			case ok:
				st.Phase, st.RolledBackFrom, st.Version = app.PhaseRolledBack, a.Version.Version, prev.Version.Version
			default:
				st.Phase = app.PhaseRemoved
			}
			if !failed {
				st.Code, st.Reason = app.CodeDependency, "another app of the deployment failed"
			}
		})
	}
}

// markRemoved reports the apps last had that d leaves out as removed.
func (r *Reconciler) markRemoved(last, d *app.Deployment) {
	if last == nil {
		return
	}
	for _, a := range last.Apps {
		if _, ok := d.Find(a.App.Name); !ok {
			r.setApp(a.App.Name, func(st *app.AppStatus) { st.Phase = app.PhaseRemoved })
		}
	}
	r.mu.Lock()
	r.status.Apps = slices.DeleteFunc(r.status.Apps, func(a app.AppStatus) bool {
		_, kept := d.Find(a.App)
		return !kept
	})
	r.mu.Unlock()
}

// progress reports a download's bytes.
func (r *Reconciler) progress(name string, done, total int64) {
	r.setApp(name, func(st *app.AppStatus) {
		st.Phase = app.PhaseDownloading
		st.Progress = &app.Progress{Done: done, Total: total}
	})
}

// publish hands the status to OnStatus, and an app's new phase to its
// history.
func (r *Reconciler) publish(changed *app.AppStatus) {
	if changed != nil {
		if err := r.opts.State.AppendHistory(*changed); err != nil {
			r.log.Warn("reconcile: recording an app's history", "app", changed.App, "err", err)
		}
	}
	if r.opts.OnStatus != nil {
		r.opts.OnStatus(r.Status())
	}
}
