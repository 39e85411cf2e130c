package reconcile

import (
	"context"
	"errors"
	"fmt"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/state"
)

// The journal's steps.
const (
	stepValidating  = "validating"
	stepFetching    = "fetching"
	stepApplying    = "applying"
	stepProbation   = "probation"
	stepRollingBack = "rolling-back"
)

// maxApplyAttempts is how many times a deployment's apply may be cut short
// (the gateway killed or crashing mid-apply) before it is rolled back.
const maxApplyAttempts = 3

// failure is a deployment's failure: the app concerned (or none), a code
// from package app, and the cause.
type failure struct {
	app, code string
	err       error
}

func (f *failure) Error() string {
	if f.app == "" {
		return f.err.Error()
	}
	return "app " + f.app + ": " + f.err.Error()
}

func (f *failure) Unwrap() error { return f.err }

func fail(appName, code string, err error) error { return &failure{app: appName, code: code, err: err} }

// codeOf returns err's failure code (CodeInvalid when it has none).
func codeOf(err error, otherwise string) (appName, code string) {
	var f *failure
	if errors.As(err, &f) {
		return f.app, f.code
	}
	return "", otherwise
}

// journal reads the journal; a damaged one reads as empty (logged by the
// store).
func (r *Reconciler) journal() state.Journal {
	j, _ := r.opts.State.Journal()
	return j
}

// save writes the journal with the status as it is now. A journal that
// cannot be written is logged: the deployment goes on, and a restart then
// resumes from the step before.
func (r *Reconciler) save(j *state.Journal) {
	st := r.Status()
	j.Status = &st
	saved, err := r.opts.State.SaveJournal(*j)
	if err != nil {
		r.log.Error("reconcile: writing the journal", "step", j.Step, "err", err)
		return
	}
	*j = saved
	if j.Step != "" && r.opts.OnStep != nil {
		r.opts.OnStep(j.Step)
	}
}

// cancellable returns the context a deployment's steps run under: a newer
// revision's Submit cancels it with errSuperseded. done ends it.
func (r *Reconciler) cancellable(ctx context.Context) (dctx context.Context, done func()) {
	dctx, cancel := context.WithCancelCause(ctx)
	r.mu.Lock()
	r.cancel = cancel
	r.mu.Unlock()
	return dctx, func() {
		r.mu.Lock()
		r.cancel = nil
		r.mu.Unlock()
		cancel(nil)
	}
}

// deploy takes d through every step.
func (r *Reconciler) deploy(ctx context.Context, d *app.Deployment) {
	dctx, done := r.cancellable(ctx)
	defer done()
	j := r.journal()
	j.Pending, j.Step, j.Attempt, j.Seen = d, stepValidating, 0, max(j.Seen, d.Revision)
	r.save(&j)
	r.log.Info("reconcile: deployment taken", "deployment", d.ID, "revision", d.Revision)
	if err := r.validate(d); err != nil {
		r.log.Warn("reconcile: deployment rejected", "deployment", d.ID, "revision", d.Revision, "err", err)
		r.reject(app.Ref{Deployment: d.ID, Revision: d.Revision}, err)
		j.Pending, j.Step = nil, ""
		r.save(&j)
		return
	}
	changed := changedApps(j.LastGood, d)
	r.begin(d, j.LastGood, changed)
	r.from(ctx, dctx, &j, d, changed, stepFetching)
}

// from takes d on from step: fetch, apply, probation, commit, or roll back.
func (r *Reconciler) from(ctx, dctx context.Context, j *state.Journal, d *app.Deployment, changed map[string]bool, step string) {
	fetched := step == stepFetching // then the fetch verifies what it finds installed; a resumed apply checks the disk itself
	if step == stepFetching {
		j.Step = stepFetching
		r.save(j)
		if err := r.fetch(dctx, d, changed); err != nil {
			if r.superseded(dctx, j) {
				return
			}
			// Nothing was stopped: what ran runs on.
			appName, code := codeOf(err, app.CodeDownload)
			r.log.Warn("reconcile: fetching failed; nothing was changed", "deployment", d.ID, "err", err)
			r.markFailed(appName, code, err)
			r.revert(d, j.LastGood, changed)
			r.finish(app.OutcomeRolledBack, code, err.Error())
			j.Pending, j.Step = nil, ""
			r.save(j)
			return
		}
		step = stepApplying
	}
	if step == stepApplying {
		j.Step = stepApplying
		j.Attempt++
		r.save(j)
		r.hold(j.LastGood, d)
		next, err := r.setsOf(d, !fetched)
		if err == nil {
			r.phase(changed, app.PhaseStarting)
			err = r.applySets(dctx, next, changed)
		}
		if err != nil {
			if r.superseded(dctx, j) {
				return
			}
			r.rollback(ctx, j, d, changed, err)
			return
		}
		step = stepProbation
	}
	j.Step, j.Attempt = stepProbation, 0
	r.save(j)
	r.phase(changed, app.PhaseProbation)
	if err := r.probation(dctx, d, changed); err != nil {
		if r.superseded(dctx, j) {
			return
		}
		r.rollback(ctx, j, d, changed, err)
		return
	}
	r.commit(j, d, changed)
}

// superseded reports whether dctx was cancelled by a newer revision, and
// if so reports d superseded and clears the journal's pending deployment:
// the next one starts from what runs, and rolls back, if it must, to the
// same last good deployment.
func (r *Reconciler) superseded(dctx context.Context, j *state.Journal) bool {
	if !errors.Is(context.Cause(dctx), errSuperseded) {
		if dctx.Err() != nil { // the gateway is stopping: resume at the next start
			r.log.Info("reconcile: stopping mid-deployment; the journal resumes it", "step", j.Step)
			return true
		}
		return false
	}
	r.log.Info("reconcile: deployment superseded", "deployment", j.Pending.ID, "revision", j.Pending.Revision)
	r.finish(app.OutcomeSuperseded, "", "revision "+fmt.Sprint(r.newestSeen())+" came while it was in progress")
	j.Pending, j.Step, j.Attempt = nil, "", 0
	r.save(j)
	return true
}

func (r *Reconciler) newestSeen() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen
}

// commit makes d the last good deployment and lets go of what only the
// one before needed.
func (r *Reconciler) commit(j *state.Journal, d *app.Deployment, changed map[string]bool) {
	r.phase(changed, app.PhaseRunning)
	r.markRemoved(j.LastGood, d)
	// The journal says committed before anything the old deployment
	// needed goes; the outcome is reported once it has gone.
	j.LastGood, j.Pending, j.Step, j.Attempt = d, nil, "", 0
	r.save(j)
	r.hold(d)
	r.collect(d)
	r.setRunning(d)
	r.finish(app.OutcomeSucceeded, "", "")
	r.save(j)
	r.log.Info("reconcile: deployment succeeded", "deployment", d.ID, "revision", d.Revision)
}

// rollback puts every app back as the last good deployment had it, from
// what is on disk, after d failed with cause.
func (r *Reconciler) rollback(ctx context.Context, j *state.Journal, d *app.Deployment, changed map[string]bool, cause error) {
	appName, code := codeOf(cause, app.CodeStart)
	r.log.Warn("reconcile: deployment failed; rolling back", "deployment", d.ID, "revision", d.Revision, "app", appName, "err", cause)
	r.markFailed(appName, code, cause)
	j.Step = stepRollingBack
	r.save(j)
	last := j.LastGood
	if last == nil {
		last = &app.Deployment{Schema: app.SchemaVersion, ID: "none"}
	}
	back, err := r.setsOf(last, true) // what can be had is put back even when an app cannot
	err = errors.Join(err, r.applySets(ctx, back, changedApps(d, last)))
	if err == nil {
		err = r.settle(ctx, last, changedApps(d, last))
	}
	if ctx.Err() != nil {
		return // stopping: the journal resumes the rollback at the next start
	}
	r.revert(d, j.LastGood, changed)
	j.Pending, j.Step, j.Attempt = nil, "", 0
	if err != nil {
		r.log.Error("reconcile: rolling back failed", "deployment", d.ID, "err", err)
		r.finish(app.OutcomeRollbackFailed, code, cause.Error()+"; rolling back: "+err.Error())
	} else {
		r.finish(app.OutcomeRolledBack, code, cause.Error())
	}
	r.save(j)
}

// boot brings the parts back after a start: the last good deployment from
// disk, then the pending one from its step.
func (r *Reconciler) boot(ctx context.Context, j state.Journal) {
	p := j.Pending
	switch {
	case p != nil && j.Step == stepRollingBack:
		r.log.Info("reconcile: resuming a rollback", "deployment", p.ID)
		r.rollback(ctx, &j, p, changedApps(j.LastGood, p), errors.New("the rollback resumed after a restart"))
		return
	case p != nil && (j.Step == stepApplying || j.Step == stepProbation):
		changed := changedApps(j.LastGood, p)
		r.begin(p, j.LastGood, changed)
		if j.Attempt >= maxApplyAttempts {
			r.rollback(ctx, &j, p, changed, fail("", app.CodeStart, fmt.Errorf("its apply was cut short %d times", j.Attempt)))
			return
		}
		r.log.Info("reconcile: resuming a deployment", "deployment", p.ID, "step", j.Step, "attempt", j.Attempt)
		r.resume(ctx, &j, p, changed)
		return
	}
	if j.LastGood != nil {
		r.restore(ctx, j.LastGood)
	}
	if p != nil { // validating or fetching: nothing was changed yet
		r.deploy(ctx, p)
	}
}

// restore applies the last good deployment d after a start, from disk:
// its apps are starting meanwhile, then running, and one that cannot be
// restored (its package damaged on disk, say) is failed with the reason
// while the others run.
func (r *Reconciler) restore(ctx context.Context, d *app.Deployment) {
	names := map[string]bool{}
	for _, a := range d.Apps {
		names[a.App.Name] = true
	}
	r.mu.Lock()
	empty := len(r.status.Apps) == 0
	r.mu.Unlock()
	if empty {
		r.begin(d, nil, names)
	}
	r.phase(names, app.PhaseStarting)
	sets, err := r.setsOf(d, true)
	err = errors.Join(err, r.applySets(ctx, sets, nil))
	r.phase(names, app.PhaseRunning)
	if err != nil {
		appName, code := codeOf(err, app.CodeStart)
		r.log.Error("reconcile: restoring the last good deployment", "deployment", d.ID, "app", appName, "err", err)
		r.markFailed(appName, code, err)
	}
	r.setRunning(d)
	r.hold(d)
}

// resume applies a pending deployment again after a restart cut it short.
func (r *Reconciler) resume(ctx context.Context, j *state.Journal, d *app.Deployment, changed map[string]bool) {
	dctx, done := r.cancellable(ctx)
	defer done()
	r.from(ctx, dctx, j, d, changed, stepApplying)
}
