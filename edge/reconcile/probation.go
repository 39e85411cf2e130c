package reconcile

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/function"
)

// pollEvery is how often probation looks at the apps it watches.
const pollEvery = 50 * time.Millisecond

func (r *Reconciler) probationOf(a app.Assignment) time.Duration {
	if a.Version.Probation > 0 {
		return time.Duration(a.Version.Probation)
	}
	return r.opts.Probation
}

// probation waits until each changed app of d has proved healthy: a
// container running its new version (its probe passing) within its
// probation; a function serving its new version, not crash-looping, for
// the whole of its probation. The first that fails ends the wait with
// its failure.
func (r *Reconciler) probation(ctx context.Context, d *app.Deployment, changed map[string]bool) error {
	return r.watch(ctx, d, changed, true)
}

// settle waits, after a rollback, until the apps put back run (bounded by
// their probation): a function serving, a container running.
func (r *Reconciler) settle(ctx context.Context, d *app.Deployment, changed map[string]bool) error {
	return r.watch(ctx, d, changed, false)
}

// watch is probation (whole: functions are watched for their whole
// probation) or settle (functions pass once serving).
func (r *Reconciler) watch(ctx context.Context, d *app.Deployment, changed map[string]bool, whole bool) error {
	start := time.Now()
	pending := map[string]app.Assignment{}
	for _, a := range d.Apps {
		if changed[a.App.Name] {
			pending[a.App.Name] = a
		}
	}
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for len(pending) > 0 {
		var containers map[string]container.AppStatus
		for _, name := range slices.Sorted(maps.Keys(pending)) {
			a := pending[name]
			over := time.Since(start) >= r.probationOf(a)
			var done bool
			var err error
			switch a.App.Kind {
			case app.KindFunction:
				done, err = r.functionHealthy(a, over || !whole)
			case app.KindContainer:
				if containers == nil {
					containers = map[string]container.AppStatus{}
					for _, st := range r.opts.Containers.Status() {
						containers[st.Name] = st
					}
				}
				done, err = containerHealthy(a, containers[name])
				if !done && err == nil && over {
					err = fail(name, app.CodeUnhealthy, fmt.Errorf("not running and healthy within its probation of %v (state %s)", r.probationOf(a), containers[name].State))
				}
			}
			if err != nil {
				return err
			}
			if done {
				delete(pending, name)
				if whole {
					r.setApp(name, func(st *app.AppStatus) { st.Phase = app.PhaseRunning })
				}
			}
		}
		if len(pending) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-t.C:
		}
	}
	return nil
}

// functionHealthy: a failure when the function crash-loops or its version
// is not the one applied; done when it serves and enough time has passed.
func (r *Reconciler) functionHealthy(a app.Assignment, enough bool) (bool, error) {
	st, err := r.opts.Functions.Status(a.App.Name)
	switch {
	case err != nil:
		return false, fail(a.App.Name, app.CodeStart, err)
	case st.Phase == function.PhaseCrashLoop:
		return false, fail(a.App.Name, app.CodeCrashLoop, errors.New(st.CrashLoop))
	case st.Phase == function.PhaseFailed:
		return false, fail(a.App.Name, app.CodeStart, errors.New(st.DeployError))
	case st.Version != a.Version.Version:
		return false, fail(a.App.Name, app.CodeStart, fmt.Errorf("version %s serves, not %s: %s", st.Version, a.Version.Version, st.DeployError))
	}
	return enough, nil
}

// containerHealthy: done when the app runs the version applied (healthy,
// with a probe); a failure when the manager rolled it back, gave up
// starting it, or it keeps exiting.
func containerHealthy(a app.Assignment, st container.AppStatus) (bool, error) {
	switch {
	case st.Name == "":
		return false, nil // not yet seen
	case st.RolledBack != "" && st.Version != a.Version.Version:
		return false, fail(a.App.Name, app.CodeUnhealthy, errors.New(st.RolledBack))
	case st.State == container.AppCrashLoop:
		return false, fail(a.App.Name, app.CodeCrashLoop, fmt.Errorf("restarted %d times in a row (last exit %d)", st.Restarts, st.LastExitCode))
	case st.State == container.AppFailed && st.Version == a.Version.Version:
		return false, fail(a.App.Name, app.CodeStart, errors.New(st.LastError))
	}
	return st.State == container.AppRunning && st.Version == a.Version.Version, nil
}

// hold keeps the function versions of the deployments given from removal
// and lets go of the others.
func (r *Reconciler) hold(ds ...*app.Deployment) {
	want := map[string]bool{}
	for _, d := range ds {
		if d == nil {
			continue
		}
		for _, a := range d.Apps {
			if a.App.Kind == app.KindFunction {
				want[a.App.Name+"/"+a.Version.Version] = true
			}
		}
	}
	if r.holds == nil {
		r.holds = map[string]func(){}
	}
	for key, release := range r.holds {
		if !want[key] {
			release()
			delete(r.holds, key)
		}
	}
	for key := range want {
		if _, ok := r.holds[key]; ok {
			continue
		}
		name, version, _ := strings.Cut(key, "/")
		release, err := r.opts.Packages.Hold(name, version)
		if err != nil {
			continue // not installed (yet)
		}
		r.holds[key] = release
	}
}

// collect removes what the committed deployment d no longer needs: other
// versions of function packages, and old configuration files of container
// apps. A version held, or one that will not go, is left for next time.
func (r *Reconciler) collect(d *app.Deployment) {
	installed, err := r.opts.State.ListInstalled()
	if err != nil {
		r.log.Warn("reconcile: listing installed versions", "err", err)
	}
	for _, in := range installed {
		if a, ok := d.Find(in.App); ok && a.Version.Version == in.Version {
			continue
		}
		if in.Kind == app.KindFunction {
			if err := r.opts.Packages.Remove(in.App, in.Version); err != nil {
				r.log.Info("reconcile: an old version stays for now", "app", in.App, "version", in.Version, "err", err)
				continue
			}
		}
		_ = r.opts.State.DeleteInstalled(in.App, in.Version)
	}
	keep := map[string]bool{}
	for _, c := range r.applied.containers {
		for _, m := range c.Spec.Mounts {
			if m.Target == containerConfigPath {
				keep[m.Source] = true
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join(r.opts.Dir, "config", "*", "*.json"))
	for _, f := range files {
		if !keep[f] {
			_ = os.Remove(f)
		}
	}
}
