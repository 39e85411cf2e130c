package function

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgekit/edgekit/internal/backoff"
	"github.com/edgekit/edgekit/invoke"
)

// instance runs invocations one at a time. The in-process kind calls a
// Handler; the out-of-process kind drives a process.
type instance interface {
	run(ctx *invCtx, req invoke.Request) (invoke.Response, error)
	// exitedC is closed when the instance died by itself (nil: never).
	exitedC() <-chan struct{}
	pid() int // the process, 0 in process
	alive() bool
	stop()
}

// handlerInstance runs a registered Handler in process.
type handlerInstance struct{ h Handler }

func (handlerInstance) exitedC() <-chan struct{} { return nil }
func (handlerInstance) pid() int                 { return 0 }
func (handlerInstance) alive() bool              { return true }
func (handlerInstance) stop()                    {}

func (pi *processInstance) exitedC() <-chan struct{} { return pi.exited }
func (pi *processInstance) pid() int                 { return pi.cmd.Process.Pid }

func (i handlerInstance) run(ctx *invCtx, req invoke.Request) (resp invoke.Response, err error) {
	defer func() {
		if r := recover(); r != nil {
			stack := string(debug.Stack())
			ctx.inv.log.Error("function panicked", "function", ctx.inv.Function, "version", ctx.inv.Version,
				"instance", ctx.inv.Instance, "request_id", ctx.inv.RequestID(), "panic", r, "stack", stack)
			err = &invoke.Error{Function: ctx.inv.Function, Version: ctx.inv.Version, Type: "Panic", Message: fmt.Sprint(r)}
		}
	}()
	resp, err = i.h.Handle(ctx, req)
	if err != nil {
		var fe *invoke.Error
		if !errors.As(err, &fe) {
			err = &invoke.Error{Function: ctx.inv.Function, Version: ctx.inv.Version, Type: fmt.Sprintf("%T", err), Message: err.Error(), Cause: err}
		}
	}
	return resp, err
}

// Job states. A job is owned by the caller until queued, then by whoever
// moves it last: the worker that finishes it, or the worker that skips or
// finishes an abandoned one.
const (
	jobQueued int32 = iota
	jobRunning
	jobDone
	jobAbandoned
)

type job struct {
	parent    context.Context
	req       invoke.Request
	deadline  time.Time
	seq       uint64
	submitted time.Time // when the caller queued it
	w         *worker   // set before the job starts running
	state     atomic.Int32
	resp      invoke.Response
	err       error
	done      chan struct{} // receives once when state becomes jobDone
}

var jobs = sync.Pool{New: func() any { return &job{done: make(chan struct{}, 1)} }}

func getJob() *job { j := jobs.Get().(*job); j.state.Store(jobQueued); return j }

func putJob(j *job) {
	j.parent, j.req, j.resp, j.err, j.w = nil, invoke.Request{}, invoke.Response{}, nil, nil
	jobs.Put(j)
}

var timers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// pool schedules one deployed version's invocations onto its instances.
type pool struct {
	fn      *function
	spec    Spec
	newInst func(id string) (instance, error)
	log     hostLogger
	jobs    chan *job // capacity QueueSize+MaxInstances: admission, not the channel, bounds it
	quit    chan struct{}
	wg      sync.WaitGroup
	// idle counts workers free to take a job, including ones just
	// started for a job they have not taken yet.
	idle atomic.Int32

	mu        sync.Mutex
	closed    bool
	workers   int // running, not stuck
	permanent int // of which never retire (Continuous MinInstances)
	stuck     int // abandoned by a timed-out caller, still in the handler
	nextInst  int
	instances map[*worker]struct{}
	waiters   atomic.Int32  // submitters waiting for room (QueueWait)
	room      chan struct{} // closed and replaced when a job is taken while waiters > 0
	// failures counts consecutive failed starts and fast exits; it goes
	// back to zero only when an instance has lived past fastExit.
	failures atomic.Int32
	failed   error // set by the crash-loop breaker
}

// Crash-loop breaker: this many starts in a row that fail, or instances that
// exit within fastExit of starting, mark the version failed until the next
// deploy.
const (
	crashLoopLimit = 3
	fastExit       = 10 * time.Second
)

var restartBackoff = backoff.Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second}

type hostLogger interface {
	Error(msg string, args ...any)
	Warn(msg string, args ...any)
}

type worker struct {
	pid         atomic.Int64 // the instance's process, 0 in process
	id          string
	started     time.Time
	permanent   bool
	busy        atomic.Bool
	stuck       atomic.Bool
	invocations atomic.Uint64
}

func newPool(fn *function, spec Spec, newInst func(id string) (instance, error), first instance) *pool {
	p := &pool{
		fn: fn, spec: spec, newInst: newInst, log: fn.host.log,
		jobs: make(chan *job, spec.QueueSize+spec.MaxInstances), quit: make(chan struct{}),
		instances: make(map[*worker]struct{}), room: make(chan struct{}),
	}
	p.mu.Lock()
	if first != nil {
		// The instance Deploy started to prove the version works.
		p.startLocked(first, spec.MinInstances > 0)
	}
	for p.permanent < spec.MinInstances {
		p.spawnLocked(true)
	}
	p.mu.Unlock()
	return p
}

// spawnLocked starts a worker, which starts its instance; p.mu is held.
func (p *pool) spawnLocked(permanent bool) { p.startLocked(nil, permanent) }

// instanceID names the next instance; p.mu is held.
func (p *pool) instanceID() string {
	p.nextInst++
	return p.spec.Version + "-" + strconv.Itoa(p.nextInst)
}

func (p *pool) startLocked(inst instance, permanent bool) {
	w := &worker{id: p.instanceID(), started: time.Now(), permanent: permanent}
	p.workers++
	if permanent {
		p.permanent++
	}
	p.instances[w] = struct{}{}
	p.idle.Add(1)
	p.fn.stats.coldStarts.Add(1)
	p.wg.Add(1)
	go p.work(w, inst)
}

// growLocked starts workers while more invocations wait than instances are
// idle, up to MaxInstances; p.mu is held.
func (p *pool) growLocked() {
	for p.failed == nil && len(p.jobs) > int(p.idle.Load()) && p.workers < p.spec.MaxInstances {
		p.spawnLocked(p.permanent < p.spec.MinInstances)
	}
}

// admitLocked queues j if, counting it, no more than QueueSize invocations
// would wait for an instance: those queued, less the idle instances and
// those that may still start. p.mu is held.
func (p *pool) admitLocked(j *job) bool {
	waiting := len(p.jobs) + 1 - int(p.idle.Load()) - (p.spec.MaxInstances - p.workers)
	if waiting > p.spec.QueueSize {
		return false
	}
	p.jobs <- j // never blocks: see the capacity of p.jobs
	p.growLocked()
	return true
}

// submit queues an invocation. retry reports that the pool was closed by a
// redeploy: the caller should look up the current version again.
func (p *pool) submit(ctx context.Context, req invoke.Request, seq uint64, wait time.Duration) (j *job, retry bool, err error) {
	j = getJob()
	j.parent, j.req, j.seq = ctx, req, seq
	j.submitted = time.Now()
	j.deadline = j.submitted.Add(time.Duration(p.spec.Timeout))
	if d, ok := ctx.Deadline(); ok && d.Before(j.deadline) {
		j.deadline = d
	}
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
			timers.Put(t)
		}
	}()
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			putJob(j)
			return nil, true, nil
		}
		if p.failed != nil {
			err := p.failed
			p.mu.Unlock()
			putJob(j)
			return nil, false, fmt.Errorf("function %s version %s: %w: crash loop: %w", p.spec.Name, p.spec.Version, invoke.ErrUnavailable, err)
		}
		if p.admitLocked(j) {
			p.mu.Unlock()
			return j, false, nil
		}
		if wait <= 0 {
			p.mu.Unlock()
			putJob(j)
			p.fn.stats.throttles.Add(1)
			return nil, false, fmt.Errorf("function %s: %w (%d waiting)", p.spec.Name, invoke.ErrThrottled, p.spec.QueueSize)
		}
		if t == nil {
			t = timers.Get().(*time.Timer)
			t.Reset(wait)
		}
		p.waiters.Add(1)
		room := p.room
		p.mu.Unlock()
		select {
		case <-room:
			p.waiters.Add(-1)
		case <-t.C:
			p.waiters.Add(-1)
			wait = 0 // one last try, then throttle
		case <-ctx.Done():
			p.waiters.Add(-1)
			putJob(j)
			return nil, false, fmt.Errorf("function %s: waiting for room in the queue: %w", p.spec.Name, ctx.Err())
		}
	}
}

// tookJob wakes submitters waiting for room and starts more instances if
// work is still queued. The common case (neither) takes no lock.
func (p *pool) tookJob() {
	if p.waiters.Load() == 0 && len(p.jobs) == 0 {
		return
	}
	p.mu.Lock()
	if p.waiters.Load() > 0 {
		close(p.room)
		p.room = make(chan struct{})
	}
	if len(p.jobs) > 0 {
		p.growLocked()
	}
	p.mu.Unlock()
}

// await waits for j's result, its deadline, or ctx.
func (p *pool) await(ctx context.Context, j *job) (invoke.Response, error) {
	t := timers.Get().(*time.Timer)
	// Measured from submission, which was a moment ago: one clock read
	// fewer per invocation, the timer at most that moment late.
	t.Reset(j.deadline.Sub(j.submitted))
	defer func() { t.Stop(); timers.Put(t) }()
	select {
	case <-j.done:
		return p.collect(j)
	case <-t.C:
		return p.abandon(j, p.timeoutError())
	case <-ctx.Done():
		return p.abandon(j, fmt.Errorf("function %s: %w", p.spec.Name, ctx.Err()))
	}
}

func (p *pool) collect(j *job) (invoke.Response, error) {
	resp, err := j.resp, j.err
	putJob(j)
	return resp, err
}

// abandon gives up on j. A job still queued is skipped by the worker that
// takes it; a running one leaves its worker stuck, and a new worker takes
// its place so the function keeps its capacity.
func (p *pool) abandon(j *job, reason error) (invoke.Response, error) {
	for {
		switch j.state.Load() {
		case jobQueued:
			if j.state.CompareAndSwap(jobQueued, jobAbandoned) {
				p.countAbandoned(reason)
				return invoke.Response{}, reason
			}
		case jobRunning:
			// Read the worker before the swap: once it sees the job
			// abandoned, the worker recycles it.
			w := j.w
			if j.state.CompareAndSwap(jobRunning, jobAbandoned) {
				p.countAbandoned(reason)
				p.replaceStuck(w)
				return invoke.Response{}, reason
			}
		case jobDone:
			<-j.done
			return p.collect(j)
		}
	}
}

func (p *pool) replaceStuck(w *worker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w.stuck.Store(true)
	p.stuck++
	p.workers--
	if w.permanent {
		p.permanent--
	}
	if !p.closed {
		for p.permanent < p.spec.MinInstances && p.workers < p.spec.MaxInstances {
			p.spawnLocked(true)
		}
		p.growLocked()
	}
}

// work is one instance's loop. inst is nil when the worker must start it.
func (p *pool) work(w *worker, inst instance) {
	defer p.wg.Done()
	if inst == nil {
		if inst = p.startInstance(w); inst == nil {
			return
		}
	}
	w.pid.Store(int64(inst.pid()))
	defer func() {
		if inst != nil { // nil after a restart that failed
			inst.stop()
		}
	}()
	var idle *time.Timer
	var idleC <-chan time.Time
	if !w.permanent {
		idle = time.NewTimer(time.Duration(p.spec.IdleTimeout))
		defer idle.Stop()
		idleC = idle.C
	}
	for {
		select {
		case j := <-p.jobs:
			p.idle.Add(-1)
			p.tookJob()
			// A delivered result counts the worker idle again before the
			// caller sees it (deliver), so a caller that invokes at once
			// finds this instance instead of starting another.
			if !p.runJob(w, inst, j) {
				return // abandoned while running: replaced
			}
			if !inst.alive() {
				// Killed at a deadline or exited during the call.
				inst.stop()
				if inst = p.restartInstance(w); inst == nil {
					return
				}
			}
			if p.failures.Load() != 0 && time.Since(w.started) >= fastExit {
				p.failures.Store(0) // an instance that has served this long is healthy
			}
			if idle != nil {
				idle.Reset(time.Duration(p.spec.IdleTimeout))
			}
		case <-inst.exitedC():
			// Died while idle (a continuous daemon that crashed).
			p.fn.setLastError(fmt.Errorf("function %s instance %s exited while idle", p.spec.Name, w.id))
			inst.stop()
			if p.fastExit(w) {
				return
			}
			if inst = p.restartInstance(w); inst == nil {
				return
			}
		case <-idleC:
			if p.retire(w) {
				return
			}
			idle.Reset(time.Duration(p.spec.IdleTimeout))
		case <-p.quit:
			if len(p.jobs) > 0 {
				continue // drain what was queued before the pool closed
			}
			p.mu.Lock()
			p.idle.Add(-1)
			p.removeLocked(w)
			p.mu.Unlock()
			return
		}
	}
}

// startInstance starts w's instance, after a backoff when starts have been
// failing. It returns nil when it failed; the worker is then gone.
func (p *pool) startInstance(w *worker) instance {
	if failures := int(p.failures.Load()); failures > 0 {
		t := time.NewTimer(restartBackoff.Delay(failures - 1))
		select {
		case <-t.C:
		case <-p.quit:
			t.Stop()
			p.mu.Lock()
			p.idle.Add(-1)
			p.removeLocked(w)
			p.mu.Unlock()
			return nil
		}
	}
	inst, err := p.newInst(w.id)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.idle.Add(-1)
		p.removeLocked(w)
		p.failedStartLocked(err)
		return nil
	}
	// A start is not yet proof of health: failures reset only once the
	// instance has lived past fastExit (see work and fastExit).
	w.started = time.Now()
	w.pid.Store(int64(inst.pid()))
	return inst
}

// restartInstance replaces w's dead instance (counted as a cold start).
// The worker stays counted idle while it restarts (a job may wait for the
// restart); startInstance takes the count away if the start fails.
func (p *pool) restartInstance(w *worker) instance {
	p.mu.Lock()
	if p.closed { // shutting down or replaced: no new process to stop again
		p.idle.Add(-1)
		p.removeLocked(w)
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	p.fn.stats.coldStarts.Add(1)
	return p.startInstance(w)
}

// fastExit counts an instance that died soon after starting; at the limit
// the worker gives up (the breaker has tripped). It reports whether the
// worker is gone.
func (p *pool) fastExit(w *worker) bool {
	if time.Since(w.started) >= fastExit {
		p.failures.Store(0) // it had been stable
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := p.failures.Add(1); n < crashLoopLimit {
		return false
	}
	p.idle.Add(-1)
	p.removeLocked(w)
	p.failedStartLocked(fmt.Errorf("instance %s exited %d times in a row within %v of starting", w.id, p.failures.Load(), fastExit))
	return true
}

// removeLocked forgets a worker that is exiting; p.mu is held.
func (p *pool) removeLocked(w *worker) {
	delete(p.instances, w)
	p.workers--
	if w.permanent {
		p.permanent--
	}
}

// failedStartLocked records a failed start and trips the breaker at the
// limit, failing what is queued; p.mu is held.
func (p *pool) failedStartLocked(err error) {
	p.fn.setLastError(err)
	p.log.Error("function instance failed to start", "function", p.spec.Name, "version", p.spec.Version, "err", err)
	if p.failures.Load() < crashLoopLimit {
		p.failures.Add(1)
	}
	if p.failures.Load() < crashLoopLimit {
		if !p.closed {
			p.growLocked()
			for p.permanent < p.spec.MinInstances && p.workers < p.spec.MaxInstances {
				p.spawnLocked(true)
			}
		}
		return
	}
	if p.failed == nil {
		p.failed = err
		p.log.Error("function is crash looping; it stays down until the next deploy", "function", p.spec.Name, "version", p.spec.Version, "err", err)
	}
	unavailable := fmt.Errorf("function %s version %s: %w: crash loop: %w", p.spec.Name, p.spec.Version, invoke.ErrUnavailable, p.failed)
	for {
		select {
		case j := <-p.jobs:
			j.err = unavailable
			if j.state.CompareAndSwap(jobQueued, jobDone) {
				j.done <- struct{}{}
			} else {
				putJob(j)
			}
		default:
			return
		}
	}
}

// runJob runs j; it reports false when the worker was replaced.
func (p *pool) runJob(w *worker, inst instance, j *job) bool {
	j.w = w
	if !j.state.CompareAndSwap(jobQueued, jobRunning) {
		putJob(j) // abandoned while queued
		return true
	}
	w.busy.Store(true)
	w.invocations.Add(1)
	ctx := &invCtx{parent: j.parent, inv: Invocation{
		Function: p.spec.Name, Version: p.spec.Version, Instance: w.id, Deadline: j.deadline,
		Config: p.spec.Config, Source: j.req.Source, idPrefix: p.fn.host.idPrefix, seq: j.seq, log: p.fn.host.log,
	}, pool: p, job: j}
	resp, err := inst.run(ctx, j.req)
	ctx.end()
	w.busy.Store(false)
	if ctx.complete(resp, err) {
		return true // j may already be recycled by its caller: not touched again
	}
	// The caller timed out and a replacement worker already runs.
	putJob(j)
	p.mu.Lock()
	p.stuck--
	delete(p.instances, w)
	p.mu.Unlock()
	p.log.Warn("function instance returned after its invocation timed out; it was replaced", "function", p.spec.Name, "version", p.spec.Version, "instance", w.id)
	return false
}

// deliver hands a result to j's caller and counts it. It reports false
// when the caller had abandoned j (then the counting was done there).
func (p *pool) deliver(j *job, resp invoke.Response, err error) bool {
	now := time.Now()
	timedOut := err != nil && !now.Before(j.deadline) && j.parent.Err() == nil
	if timedOut {
		err = p.timeoutError() // the function gave up at its deadline
	}
	j.resp, j.err = resp, err
	if !j.state.CompareAndSwap(jobRunning, jobDone) {
		return false
	}
	// Before the caller can look or invoke again: the instance is free.
	j.w.busy.Store(false)
	p.idle.Add(1)
	p.fn.stats.invocations.Add(1)
	p.fn.stats.durations.observe(now.Sub(j.submitted))
	switch {
	case timedOut:
		p.fn.stats.timeouts.Add(1)
		p.fn.setLastError(err)
	case err != nil:
		p.fn.stats.errors.Add(1)
		p.fn.setLastError(err)
	}
	j.done <- struct{}{}
	return true
}

// retire stops an idle on-demand worker unless work is waiting.
func (p *pool) retire(w *worker) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.jobs) > 0 {
		return false
	}
	p.idle.Add(-1)
	p.removeLocked(w)
	return true
}

// close stops taking invocations; queued and running ones finish, then the
// workers exit. wait blocks until they have.
func (p *pool) countAbandoned(reason error) {
	p.fn.stats.invocations.Add(1)
	p.fn.stats.durations.observe(time.Duration(p.spec.Timeout))
	if errors.Is(reason, invoke.ErrTimeout) {
		p.fn.stats.timeouts.Add(1)
		p.fn.setLastError(reason)
	}
}

func (p *pool) timeoutError() error {
	return fmt.Errorf("function %s (version %s): %w after %v", p.spec.Name, p.spec.Version, invoke.ErrTimeout, time.Duration(p.spec.Timeout))
}

func (p *pool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	close(p.quit)
}

func (p *pool) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("function %s version %s: waiting for instances to stop: %w", p.spec.Name, p.spec.Version, ctx.Err())
	}
}
