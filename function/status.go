package function

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/edgekit/edgekit/invoke"
)

// Stats are a function's counters since it was first deployed (they carry
// over redeploys).
type Stats struct {
	Invocations uint64 // answered: a result, an error or a timeout
	Errors      uint64 // of which the function reported an error
	Throttles   uint64 // refused for a full queue (not in Invocations)
	Timeouts    uint64 // of Invocations, those that passed their deadline
	ColdStarts  uint64 // instances started
	// Duration is the histogram of invocation durations as callers see
	// them: from queueing the call to its answer, queue wait included (a
	// timeout counts as its limit).
	Duration Histogram
}

// InstanceState is what an instance is doing.
type InstanceState string

// Instance states.
const (
	InstanceIdle InstanceState = "idle"
	InstanceBusy InstanceState = "busy"
	// InstanceStuck: its invocation timed out and a replacement took its
	// place; an in-process handler that ignores its context stays here
	// until it returns.
	InstanceStuck InstanceState = "stuck"
)

// InstanceStatus describes one instance.
type InstanceStatus struct {
	ID          string
	State       InstanceState
	Started     time.Time
	Invocations uint64
	// PID, CPU and RSS describe an out-of-process instance's process,
	// sampled from /proc when Status is called (zero in process).
	PID int
	CPU time.Duration
	RSS int64 // bytes
}

// Phase is where a function is in its life.
type Phase string

// Phases.
const (
	// PhaseRunning: the version serves invocations (an on-demand one may
	// have no instance running).
	PhaseRunning Phase = "running"
	// PhaseCrashLoop: the version's instances kept failing to start or
	// exiting right after starting (Status.CrashLoop says how); it serves
	// nothing until the next deploy.
	PhaseCrashLoop Phase = "crash-loop"
	// PhaseFailed: the function's deploy failed and no version of it
	// serves (Status.DeployError says why).
	PhaseFailed Phase = "failed"
	// PhaseRemoved: only in Options.OnChange, the function is gone.
	PhaseRemoved Phase = "removed"
)

// Status describes a deployed function.
type Status struct {
	Name, Version string
	Phase         Phase
	// DeployError says why the latest deploy of this name failed: with
	// PhaseFailed nothing serves; otherwise the version before serves on.
	// A deploy that succeeds clears it.
	DeployError string
	Runtime     Runtime
	Mode        Mode
	Spec        Spec // with defaults filled in
	Instances   []InstanceStatus
	QueueDepth  int
	Stats       Stats
	LastError   string
	LastErrorAt time.Time
	// MemoryLimit says how an instance's memory is limited ("cgroup1 128
	// MB", "rlimit-as 128 MB", or "none"; in-process functions share the
	// host's memory).
	MemoryLimit string
	// ProcessLimit says how an instance's processes are bounded and
	// tracked ("cgroup1 256", "cgroup2 256", "rlimit-nproc 256" where the
	// instance runs as a uid of its own, or "process group": only the
	// process group is killed, and nothing bounds the count).
	ProcessLimit string
	// User is the uid:gid an out-of-process function's instances run as
	// ("host" when as the host's own user; empty in process).
	User string
	// CrashLoop is set when the version's instances kept failing to start
	// or exiting right after starting; it serves no invocations
	// (invoke.ErrUnavailable) until the next deploy.
	CrashLoop string
	// Metrics are the latest values the function reported (native
	// protocol metric frames), by name.
	Metrics map[string]float64
}

// Status returns the named function's status, a failed one's included.
func (h *Host) Status(name string) (Status, error) {
	fn, err := h.lookup(name)
	if err != nil {
		return Status{}, err
	}
	st, ok := fn.status()
	if !ok {
		return Status{}, fmt.Errorf("function %s: %w", name, invoke.ErrNotFound)
	}
	return st, nil
}

// List returns every deployed function's status, by name.
func (h *Host) List() []Status {
	h.mu.RLock()
	fns := make([]*function, 0, len(h.functions))
	for _, fn := range h.functions {
		fns = append(fns, fn)
	}
	h.mu.RUnlock()
	out := make([]Status, 0, len(fns))
	for _, fn := range fns {
		if st, ok := fn.status(); ok {
			out = append(out, st)
		}
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// status is the function's state: its current version's, or the failed
// deploy's when none serves; false when there is neither (removed).
func (fn *function) status() (Status, bool) {
	p := fn.current.Load()
	fn.errMu.Lock()
	failed, deployErr := fn.failed, fn.deployErr
	fn.errMu.Unlock()
	switch {
	case p != nil:
		st := fn.poolStatus(p)
		st.Phase, st.DeployError = PhaseRunning, deployErr
		if st.CrashLoop != "" {
			st.Phase = PhaseCrashLoop
		}
		return st, true
	case failed != nil:
		return Status{Name: failed.Name, Version: failed.Version, Runtime: failed.Runtime, Mode: failed.Mode, Spec: *failed,
			Phase: PhaseFailed, DeployError: deployErr}, true
	}
	return Status{}, false
}

func (fn *function) poolStatus(p *pool) Status {
	st := Status{
		Name: p.spec.Name, Version: p.spec.Version, Runtime: p.spec.Runtime, Mode: p.spec.Mode, Spec: p.currentSpec(),
		Stats: Stats{
			Invocations: fn.stats.invocations.Load(), Errors: fn.stats.errors.Load(), Throttles: fn.stats.throttles.Load(),
			Timeouts: fn.stats.timeouts.Load(), ColdStarts: fn.stats.coldStarts.Load(),
			Duration: fn.stats.durations.snapshot(),
		},
	}
	fn.errMu.Lock()
	st.LastError, st.LastErrorAt = fn.lastErr, fn.lastErrAt
	st.Metrics = maps.Clone(fn.metrics)
	fn.errMu.Unlock()
	p.mu.Lock()
	st.QueueDepth = len(p.queue)
	if p.failed != nil {
		st.CrashLoop = p.failed.Error()
	}
	st.MemoryLimit = "none"
	if p.spec.Runtime != RuntimeGo && fn.host.launch.mem.kind != MemoryNone {
		st.MemoryLimit = fmt.Sprintf("%s %d MB", fn.host.launch.mem.kind, p.spec.MemoryLimitMB)
	}
	if p.spec.Runtime != RuntimeGo {
		st.ProcessLimit = fn.host.launch.mem.processLimit(p.spec)
		st.User = "host"
		if u := p.spec.User; u != nil {
			st.User = fmt.Sprintf("%d:%d", u.UID, u.GID)
		}
	}
	for w := range p.instances {
		state := InstanceIdle
		switch {
		case w.stuck.Load():
			state = InstanceStuck
		case w.busy.Load():
			state = InstanceBusy
		}
		st.Instances = append(st.Instances, InstanceStatus{ID: w.id, State: state, Started: w.started, Invocations: w.invocations.Load(), PID: int(w.pid.Load())})
	}
	p.mu.Unlock()
	for i := range st.Instances { // /proc reads outside the lock
		st.Instances[i].CPU, st.Instances[i].RSS = procStats(st.Instances[i].PID)
	}
	slices.SortFunc(st.Instances, func(a, b InstanceStatus) int { return a.Started.Compare(b.Started) })
	return st
}
