package function

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgekit/edgekit/internal/backoff"
	"github.com/edgekit/edgekit/internal/drain"
	"github.com/edgekit/edgekit/invoke"
)

// instance runs invocations one at a time. The in-process kind calls a
// Handler; the out-of-process kind drives a process.
type instance interface {
	run(ctx *invCtx, req invoke.Request) (invoke.Response, error)
	// inline reports that run ends by the invocation's deadline whatever
	// the function does, so a caller may run it on its own goroutine
	// (borrowing the instance) instead of handing it to the worker.
	inline() bool
	// exitedC is closed when the instance died by itself (nil: never).
	exitedC() <-chan struct{}
	pid() int // the process, 0 in process
	alive() bool
	stop()
}

// handlerInstance runs a registered Handler in process. A handler may
// ignore its context, so it runs on its worker's goroutine and the caller
// enforces the deadline.
type handlerInstance struct{ h Handler }

func (handlerInstance) inline() bool             { return false }
func (handlerInstance) exitedC() <-chan struct{} { return nil }
func (handlerInstance) pid() int                 { return 0 }
func (handlerInstance) alive() bool              { return true }
func (handlerInstance) stop()                    {}

// A process instance kills its process group at the deadline, so its run
// always returns in time: callers borrow it.
func (pi *processInstance) inline() bool             { return true }
func (pi *processInstance) exitedC() <-chan struct{} { return pi.exited }
func (pi *processInstance) pid() int                 { return pi.cmd.Process.Pid }

func (i handlerInstance) run(ctx *invCtx, req invoke.Request) (resp invoke.Response, err error) {
	defer func() {
		if r := recover(); r != nil {
			stack := string(debug.Stack())
			ctx.inv.log.Error("function panicked", "function", ctx.inv.Function, "version", ctx.inv.Version,
				"instance", ctx.inv.Instance, "request_id", ctx.inv.RequestID(), "panic", r, "stack", stack)
			err = &invoke.Error{Function: ctx.inv.Function, Version: ctx.inv.Version, Type: "Panic", Message: fmt.Sprint(r),
				Stack: strings.Split(strings.TrimSpace(stack), "\n")}
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

// Job states. A job is owned by the caller until queued, then by the
// worker that finishes it, and again by its caller once done is signalled;
// the caller recycles it. An abandoned job (its caller gave up, or the
// pool's watchdog timed it out) is never recycled: its worker may still
// hold it, and the caller may still read why it was abandoned, so the
// collector takes it. A borrowed job (job.borrowed set) never leaves its
// caller.
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
	borrowed  bool      // the caller runs it on w's instance itself
	state     atomic.Int32
	resp      invoke.Response
	err       error
	// done receives once when state becomes jobDone, or when the
	// watchdog abandoned the job (err says why).
	done chan struct{}
}

var jobs = sync.Pool{New: func() any { return &job{done: make(chan struct{}, 1)} }}

func getJob() *job { j := jobs.Get().(*job); j.state.Store(jobQueued); return j }

func putJob(j *job) {
	j.parent, j.req, j.resp, j.err, j.w, j.borrowed = nil, invoke.Request{}, invoke.Response{}, nil, nil, false
	jobs.Put(j)
}

var timers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// pool schedules one deployed version's invocations onto its instances.
//
// Free instances wait on a stack (the most recently used on top, so the
// others go idle and retire). A caller that finds one free takes it: an
// out-of-process instance it borrows and drives on its own goroutine, which
// saves two goroutine handoffs per invocation; an in-process one it hands
// the job to. With none free the job waits in the queue, which every
// instance looks at before it goes back on the stack.
type pool struct {
	fn *function
	// watch is the pool's one deadline timer, for every invocation that
	// is queued or runs on a worker's goroutine (borrowed ones end by
	// their deadline themselves): it is armed no later than the earliest
	// of their deadlines, and moved only earlier, so an invocation costs
	// no timer of its own. When it fires it times out what has expired
	// and re-arms for the rest (expire).
	watch   *time.Timer
	spec    Spec
	config  *liveConfig // spec.Config as deployments changed it since
	newInst func(id string) (instance, error)
	log     hostLogger
	quit    chan struct{}
	wg      sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	queue     []*job    // waiting for an instance, oldest first
	free      []*worker // parked with a free instance
	starting  int       // workers starting or restarting their instance
	workers   int       // running, not stuck
	permanent int       // of which never retire (Continuous MinInstances)
	stuck     int       // abandoned by a timed-out caller, still in the handler
	nextInst  int
	instances map[*worker]struct{}
	watchAt   time.Time     // when watch fires; zero: stopped
	waiters   int           // submitters waiting for room (QueueWait)
	room      chan struct{} // closed and replaced when a queued job is taken while waiters > 0
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

// Worker states, under pool.mu.
const (
	workerStarting = iota // starting or restarting its instance
	workerFree            // parked on pool.free
	workerBorrowed        // a caller is running an invocation on the instance
	workerBusy            // its goroutine owns the instance (a job or a wake-up may be on its way in jobs)
)

type worker struct {
	pid       atomic.Int64 // the instance's process, 0 in process
	id        string
	permanent bool
	// jobs hands the parked worker a job, or nil: "look again" (a
	// borrower gave back an instance that died, or the pool closed).
	jobs        chan *job
	busy        atomic.Bool
	stuck       atomic.Bool
	invocations atomic.Uint64

	// Under pool.mu.
	state   int
	job     *job // the job its goroutine was handed, until it settles
	inst    instance
	started time.Time
	// served is invocations when the instance started: one that ran an
	// invocation since has shown it works.
	served   uint64
	lastUsed time.Time // for the idle timeout
}

func newPool(fn *function, spec Spec, config *liveConfig, newInst func(id string) (instance, error), first instance) *pool {
	p := &pool{
		fn: fn, spec: spec, config: config, newInst: newInst, log: fn.host.log, quit: make(chan struct{}),
		instances: make(map[*worker]struct{}), room: make(chan struct{}),
	}
	p.watch = time.AfterFunc(time.Hour, p.expire)
	p.watch.Stop()
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
	now := time.Now()
	w := &worker{id: p.instanceID(), permanent: permanent, jobs: make(chan *job, 1),
		state: workerStarting, inst: inst, started: now, lastUsed: now}
	if inst != nil {
		w.pid.Store(int64(inst.pid()))
	}
	p.workers++
	if permanent {
		p.permanent++
	}
	p.instances[w] = struct{}{}
	p.starting++
	p.fn.stats.coldStarts.Add(1)
	p.wg.Add(1)
	go p.work(w, inst)
}

// growLocked starts workers while more invocations wait than instances are
// starting, up to MaxInstances; p.mu is held.
func (p *pool) growLocked() {
	for p.failed == nil && len(p.queue) > p.starting && p.workers < p.spec.MaxInstances {
		p.spawnLocked(p.permanent < p.spec.MinInstances)
	}
}

// admitLocked queues j if, counting it, no more than QueueSize invocations
// would wait for an instance: those queued, less the instances starting and
// those that may still start. p.mu is held.
func (p *pool) admitLocked(j *job) bool {
	waiting := len(p.queue) + 1 - p.starting - (p.spec.MaxInstances - p.workers)
	if waiting > p.spec.QueueSize {
		return false
	}
	p.queue = append(p.queue, j)
	p.watchLocked(j.deadline)
	p.growLocked()
	return true
}

// takeFreeLocked removes and returns the most recently parked worker whose
// instance is alive, or nil. One that died while parked stays for its own
// goroutine to restart. p.mu is held.
func (p *pool) takeFreeLocked() *worker {
	for i := len(p.free) - 1; i >= 0; i-- {
		if w := p.free[i]; w.inst.alive() {
			p.free = slices.Delete(p.free, i, i+1)
			return w
		}
	}
	return nil
}

// unfreeLocked takes w off the free stack; p.mu is held.
func (p *pool) unfreeLocked(w *worker) {
	if i := slices.Index(p.free, w); i >= 0 {
		p.free = slices.Delete(p.free, i, i+1)
	}
}

// dequeueLocked gives the oldest queued job to w, which owns its instance,
// and wakes submitters waiting for room; p.mu is held.
func (p *pool) dequeueLocked(w *worker) *job {
	j := p.queue[0]
	p.queue[0] = nil
	p.queue = p.queue[1:]
	if len(p.queue) == 0 {
		p.queue = p.queue[:0:0] // let the backing array go
	}
	p.assignLocked(w, j)
	if p.waiters > 0 {
		close(p.room)
		p.room = make(chan struct{})
	}
	return j
}

// lendLocked lends w's instance to j's caller, who runs j on it; p.mu is
// held.
func (p *pool) lendLocked(w *worker, j *job) {
	w.state = workerBorrowed
	w.busy.Store(true)
	w.invocations.Add(1)
	j.w, j.borrowed = w, true
}

// assignLocked marks w as running j on its own goroutine; p.mu is held.
func (p *pool) assignLocked(w *worker, j *job) {
	w.state = workerBusy
	w.busy.Store(true)
	w.invocations.Add(1)
	j.w, w.job = w, j
	p.watchLocked(j.deadline)
}

// watchLocked makes sure the watchdog fires by deadline; p.mu is held. In
// the steady state (one timeout for every invocation) it is armed already,
// for an earlier deadline, and this costs a comparison.
func (p *pool) watchLocked(deadline time.Time) {
	if p.watchAt.IsZero() || deadline.Before(p.watchAt) {
		p.watchAt = deadline
		p.watch.Reset(time.Until(deadline))
	}
}

// expire is the watchdog: it times out every queued or running job whose
// deadline has come, and re-arms for the earliest of the others.
func (p *pool) expire() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.watchAt = time.Time{}
	now := time.Now()
	var next time.Time
	check := func(j *job, w *worker) {
		if st := j.state.Load(); st == jobDone || st == jobAbandoned || j.borrowed {
			return
		}
		if now.Before(j.deadline) {
			if next.IsZero() || j.deadline.Before(next) {
				next = j.deadline
			}
			return
		}
		p.timeOutLocked(j, w)
	}
	for _, j := range p.queue {
		check(j, nil)
	}
	for w := range p.instances {
		if w.job != nil {
			check(w.job, w)
		}
	}
	if !next.IsZero() {
		p.watchLocked(next)
	}
}

// timeOutLocked abandons j at its deadline and tells its caller: j
// waits in the queue, or runs (or is about to) on w's goroutine, which a
// new worker then replaces. p.mu is held.
func (p *pool) timeOutLocked(j *job, w *worker) {
	for {
		st := j.state.Load()
		switch {
		case st == jobQueued && j.state.CompareAndSwap(jobQueued, jobAbandoned):
			// Its worker, if it has one, skips it.
		case st == jobRunning && j.state.CompareAndSwap(jobRunning, jobAbandoned):
			p.replaceStuckLocked(w)
		case st == jobDone || st == jobAbandoned:
			return
		default:
			continue // it moved meanwhile
		}
		break
	}
	j.err = p.timeoutError()
	p.countAbandoned(j.err)
	j.done <- struct{}{}
}

// submit starts or queues an invocation. retry reports that the pool was
// closed by a redeploy: the caller should look up the current version
// again. A borrowed job (j.borrowed) is run by the caller in await.
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
		if w := p.takeFreeLocked(); w != nil {
			if w.inst.inline() {
				p.lendLocked(w, j)
			} else {
				p.assignLocked(w, j)
				w.jobs <- j // never blocks: a parked worker's channel is empty
			}
			p.mu.Unlock()
			return j, false, nil
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
		p.waiters++
		room := p.room
		p.mu.Unlock()
		select {
		case <-room:
		case <-t.C:
			wait = 0 // one last try, then throttle
		case <-ctx.Done():
			p.mu.Lock()
			p.waiters--
			p.mu.Unlock()
			putJob(j)
			return nil, false, fmt.Errorf("function %s: waiting for room in the queue: %w", p.spec.Name, ctx.Err())
		}
		p.mu.Lock()
		p.waiters--
		p.mu.Unlock()
	}
}

// await runs a borrowed job, or waits for j's result, its deadline, or ctx.
func (p *pool) await(ctx context.Context, j *job) (invoke.Response, error) {
	for j.borrowed {
		resp, err, again := p.runBorrowed(j)
		if !again {
			return resp, err
		}
		// The instance had died before it took j: j went to another
		// instance, borrowed again or queued.
	}
	// The deadline is the watchdog's (expire), which signals done too.
	if cancelled := ctx.Done(); cancelled != nil {
		select {
		case <-j.done:
		case <-cancelled:
			return p.abandon(j, fmt.Errorf("function %s: %w", p.spec.Name, ctx.Err()))
		}
	} else {
		<-j.done
	}
	return p.collect(j)
}

// runBorrowed runs j on the caller's goroutine, on the instance it
// borrowed, then gives the instance back. again reports that the instance
// never took j and j was placed anew (see replace).
func (p *pool) runBorrowed(j *job) (resp invoke.Response, err error, again bool) {
	w := j.w
	ctx := p.invocation(w, j)
	resp, err = w.inst.run(ctx, j.req)
	ctx.end()
	if errors.Is(err, errNotTaken) && p.replace(j, w) {
		return invoke.Response{}, nil, true
	}
	err = notTakenCause(err)
	if err != nil && j.parent.Err() != nil {
		err = fmt.Errorf("function %s: %w", p.spec.Name, j.parent.Err())
	}
	p.giveBack(w, p.account(j, resp, err))
	resp, err = j.resp, j.err
	putJob(j)
	return resp, err, false
}

// replace gives back w, whose instance died before it took the borrowed
// job j, and places j anew: on another free instance (borrowed again) or
// at the head of the queue, where the instance's restart or another takes
// it. It reports false, leaving j with w, when j cannot run any more: its
// deadline or caller is done, or the pool has closed.
func (p *pool) replace(j *job, w *worker) bool {
	if !j.runnable() {
		return false
	}
	p.giveBack(w, time.Now())
	p.mu.Lock()
	defer p.mu.Unlock()
	j.w, j.borrowed = nil, false
	if next := p.takeFreeLocked(); next != nil && next.inst.inline() {
		p.lendLocked(next, j)
		return true
	}
	p.queue = slices.Insert(p.queue, 0, j)
	p.watchLocked(j.deadline)
	p.growLocked()
	return true
}

// notTakenCause strips errNotTaken from an error the caller gets.
func notTakenCause(err error) error {
	if err == nil {
		return nil // the common case, without errors.As's allocation
	}
	var nt *notTakenError
	if errors.As(err, &nt) {
		return nt.cause
	}
	return err
}

// runnable reports whether j may still run: its caller waits and its
// deadline has not come.
func (j *job) runnable() bool { return j.parent.Err() == nil && time.Now().Before(j.deadline) }

// giveBack ends a borrow: the instance takes the oldest queued job, or
// goes back on the free stack, or (dead, or the pool closed) its worker is
// woken to restart it or stop.
func (p *pool) giveBack(w *worker, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w.busy.Store(false)
	p.healthyLocked(w, now)
	switch {
	case !w.inst.alive() || (p.closed && len(p.queue) == 0):
		w.state = workerBusy
		w.jobs <- nil
	case len(p.queue) > 0:
		w.jobs <- p.dequeueLocked(w)
	default:
		w.state = workerFree
		p.free = append(p.free, w)
	}
}

// healthyLocked notes that w's instance served until now, and forgives
// past failures once it has lived past fastExit; p.mu is held.
func (p *pool) healthyLocked(w *worker, now time.Time) {
	w.lastUsed = now
	if p.failures.Load() != 0 && w.lastUsed.Sub(w.started) >= fastExit {
		p.failures.Store(0)
	}
}

// collect takes the outcome of a job whose done was signalled, and
// recycles it unless the watchdog abandoned it.
func (p *pool) collect(j *job) (invoke.Response, error) {
	resp, err := j.resp, j.err
	if j.state.Load() == jobDone {
		putJob(j)
	}
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
		case jobDone, jobAbandoned:
			// Done, or timed out by the watchdog, which signals done.
			<-j.done
			return p.collect(j)
		}
	}
}

func (p *pool) replaceStuck(w *worker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.replaceStuckLocked(w)
}

func (p *pool) replaceStuckLocked(w *worker) {
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

// work is one worker's loop: it owns its instance except while a caller
// borrows it. inst is nil when the worker must start it.
func (p *pool) work(w *worker, inst instance) {
	defer p.wg.Done()
	if inst == nil {
		if inst = p.startInstance(w); inst == nil {
			return
		}
	}
	defer func() {
		if inst != nil { // nil after a restart that failed
			inst.stop()
		}
	}()
	var idle *time.Timer
	if !w.permanent {
		idle = time.NewTimer(time.Duration(p.spec.IdleTimeout))
		defer idle.Stop()
	}
	j, gone := p.settle(w, time.Now()) // j: a job this worker has taken; nil: parked
	for !gone {
		if !inst.alive() {
			// Killed at a deadline, exited during a call, or crashed.
			if j != nil {
				// Taken from the queue as it died: it runs once an
				// instance is back (settle below would drop it).
				p.requeue(j)
				j = nil
			}
			inst.stop()
			if inst = p.restartInstance(w); inst == nil {
				return
			}
			if j, gone = p.settle(w, time.Now()); gone {
				return
			}
		}
		if j == nil {
			var crashed bool
			if j, crashed, gone = p.park(w, inst, idle); gone {
				return
			}
			switch {
			case crashed:
				// Died while idle (a continuous daemon that crashed).
				p.fn.setLastError(fmt.Errorf("function %s instance %s exited while idle", p.spec.Name, w.id))
				gone = p.fastExit(w)
				continue
			case j == nil:
				// Woken to look again: given back dead (restarted
				// above), or the pool closed.
				if inst.alive() {
					j, gone = p.settle(w, time.Now())
				}
				continue
			case !inst.alive():
				p.requeue(j) // it runs once the instance is back
				j = nil
				continue
			}
		}
		j, gone = p.runJob(w, inst, j)
	}
}

// settle is where a worker that owns its live instance goes between jobs:
// it takes the oldest queued job, or parks on the free stack (j nil), or,
// when the pool has closed and nothing is queued, leaves (gone).
func (p *pool) settle(w *worker, now time.Time) (j *job, gone bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.state == workerStarting {
		p.starting--
	}
	w.busy.Store(false)
	w.job = nil
	p.healthyLocked(w, now)
	switch {
	case len(p.queue) > 0:
		return p.dequeueLocked(w), false
	case p.closed:
		if w.state == workerFree { // woken by close
			p.unfreeLocked(w)
		}
		p.removeLocked(w)
		return nil, true
	default:
		w.state = workerFree
		p.free = append(p.free, w)
		return nil, false
	}
}

// park waits, with w parked or lent out, for a job handed to it or an
// event: the instance dying while parked (crashed), the idle timeout or
// the pool closing (gone). It returns j nil and neither flag when woken to
// look again.
func (p *pool) park(w *worker, inst instance, idle *time.Timer) (j *job, crashed, gone bool) {
	exited, quit := inst.exitedC(), p.quit
	// The idle timer is not reset per job (a clock read and a timer
	// update each time): when it fires it looks at lastUsed.
	var idleC <-chan time.Time
	if idle != nil {
		idleC = idle.C
	}
	if exited == nil && idleC == nil {
		// A permanent in-process worker waits on its jobs alone (a
		// plain receive is cheaper than a select); close hands it nil.
		return <-w.jobs, false, false
	}
	for {
		select {
		case j := <-w.jobs:
			return j, false, false
		case <-exited:
			p.mu.Lock()
			if w.state != workerFree {
				// Lent out: the borrower sees it and wakes the worker.
				p.mu.Unlock()
				exited = nil
				continue
			}
			p.unfreeLocked(w)
			w.state = workerBusy
			p.mu.Unlock()
			return nil, true, false
		case <-idleC:
			p.mu.Lock()
			if w.state != workerFree {
				p.mu.Unlock()
				idle.Reset(time.Duration(p.spec.IdleTimeout))
				continue
			}
			if rest := time.Duration(p.spec.IdleTimeout) - time.Since(w.lastUsed); rest > 0 {
				p.mu.Unlock()
				idle.Reset(rest) // a borrower used it meanwhile
				continue
			}
			p.unfreeLocked(w)
			p.removeLocked(w)
			p.mu.Unlock()
			return nil, false, true
		case <-quit:
			p.mu.Lock()
			if w.state != workerFree {
				// Lent out: the borrower wakes the worker, which then
				// finds the pool closed.
				p.mu.Unlock()
				quit = nil
				continue
			}
			p.unfreeLocked(w)
			p.removeLocked(w)
			p.mu.Unlock()
			return nil, false, true
		}
	}
}

// requeue puts j back at the head of the queue: its worker's instance died
// before it could run it.
func (p *pool) requeue(j *job) {
	p.mu.Lock()
	defer p.mu.Unlock()
	j.w.busy.Store(false)
	j.w.job, j.w = nil, nil
	p.queue = slices.Insert(p.queue, 0, j)
	p.watchLocked(j.deadline)
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
			p.starting--
			p.removeLocked(w)
			p.mu.Unlock()
			return nil
		}
	}
	inst, err := p.newInst(w.id)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.starting--
		p.removeLocked(w)
		p.failedStartLocked(err)
		return nil
	}
	// A start is not yet proof of health: failures reset only once the
	// instance has lived past fastExit (see healthyLocked).
	w.started = time.Now()
	w.served = w.invocations.Load()
	w.inst = inst
	w.pid.Store(int64(inst.pid()))
	if pi, ok := inst.(*processInstance); ok && pi.native != nil && !bytes.Equal(pi.spec.Config, p.config.load()) {
		pi.configure(p.config.load()) // changed while it started
	}
	return inst
}

// liveConfig is a function version's configuration, which a deployment
// may change while the version's instances run (in process, and on the
// native protocol, which tells them).
type liveConfig struct {
	v atomic.Pointer[json.RawMessage]
}

func newLiveConfig(c json.RawMessage) *liveConfig {
	l := &liveConfig{}
	l.v.Store(&c)
	return l
}

func (l *liveConfig) load() json.RawMessage { return *l.v.Load() }

// live reports whether the version's instances take a changed
// configuration while they run: in-process handlers read it at each
// invocation, native instances are sent it. The others are restarted.
func (p *pool) live() bool { return p.spec.Runtime == RuntimeGo || p.spec.API == APINative }

// currentSpec is the version's spec with its configuration as it is now.
func (p *pool) currentSpec() Spec {
	s := p.spec
	s.Config = p.config.load()
	return s
}

// reconfigure changes the version's configuration and sends it to every
// native instance (one starting meanwhile is sent it by startInstance).
func (p *pool) reconfigure(cfg json.RawMessage) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if bytes.Equal(p.config.load(), cfg) {
		return
	}
	p.config.v.Store(&cfg)
	for w := range p.instances {
		if pi, ok := w.inst.(*processInstance); ok && pi.native != nil {
			pi.configure(cfg)
		}
	}
}

// restartInstance replaces w's dead instance (counted as a cold start).
// The worker counts as starting meanwhile, so queued jobs wait for it
// rather than start another instance.
func (p *pool) restartInstance(w *worker) instance {
	p.mu.Lock()
	if p.closed { // shutting down or replaced: no new process to stop again
		if w.state == workerStarting {
			p.starting--
		}
		p.removeLocked(w)
		p.mu.Unlock()
		return nil
	}
	if w.state != workerStarting {
		w.state = workerStarting
		p.starting++
	}
	p.mu.Unlock()
	p.fn.stats.coldStarts.Add(1)
	return p.startInstance(w)
}

// fastExit counts an instance that died soon after starting without
// serving an invocation; at the limit the worker gives up (the breaker has
// tripped). It reports whether the worker is gone. A runtime that exits
// after an invocation (aws-lambda-go after a panic) is restarted, as Lambda
// gives the next invocation a fresh runtime.
func (p *pool) fastExit(w *worker) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(w.started) >= fastExit {
		p.failures.Store(0) // it had been stable
		return false
	}
	if w.invocations.Load() > w.served {
		return false
	}
	if n := p.failures.Add(1); n < crashLoopLimit {
		return false
	}
	p.removeLocked(w)
	p.failedStartLocked(fmt.Errorf("instance %s exited %d times in a row within %v of starting", w.id, p.failures.Load(), fastExit))
	return true
}

// crashLooping reports whether the breaker has tripped.
func (p *pool) crashLooping() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed != nil
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
		p.fn.host.changes.note(p.spec.Name)
		p.log.Error("function is crash looping; it stays down until the next deploy", "function", p.spec.Name, "version", p.spec.Version, "err", err)
	}
	unavailable := fmt.Errorf("function %s version %s: %w: crash loop: %w", p.spec.Name, p.spec.Version, invoke.ErrUnavailable, p.failed)
	for _, j := range p.queue {
		j.err = unavailable
		if j.state.CompareAndSwap(jobQueued, jobDone) {
			j.done <- struct{}{}
		} // else abandoned: not recycled (see the job states)
	}
	p.queue = nil
}

// invocation is the context j runs under on w's instance.
func (p *pool) invocation(w *worker, j *job) *invCtx {
	return &invCtx{parent: j.parent, inv: Invocation{
		Function: p.spec.Name, Version: p.spec.Version, Instance: w.id, Deadline: j.deadline,
		Config: p.config.load(), Source: j.req.Source, Trace: j.req.Trace, ids: p.fn.host.ids, seq: j.seq, log: p.fn.host.log,
	}}
}

// runJob runs j on the worker's goroutine. It returns the next job the
// worker took from the queue (nil: it parked or must restart its
// instance), and gone when the worker must exit: replaced after its caller
// gave up, or the pool closed.
func (p *pool) runJob(w *worker, inst instance, j *job) (next *job, gone bool) {
	if !j.state.CompareAndSwap(jobQueued, jobRunning) {
		return p.settle(w, time.Now()) // abandoned while queued
	}
	ctx := p.invocation(w, j)
	resp, err := inst.run(ctx, j.req)
	ctx.end()
	if errors.Is(err, errNotTaken) && j.runnable() && j.state.CompareAndSwap(jobRunning, jobQueued) {
		// The instance had died before it took j: j goes back to the
		// head of the queue, for this worker's next instance or another.
		p.requeue(j)
		return nil, false
	}
	err = notTakenCause(err)
	if !j.state.CompareAndSwap(jobRunning, jobDone) {
		// The caller timed out and a replacement worker already runs.
		p.mu.Lock()
		p.stuck--
		delete(p.instances, w)
		p.mu.Unlock()
		p.log.Warn("function instance returned after its invocation timed out; it was replaced", "function", p.spec.Name, "version", p.spec.Version, "instance", w.id)
		return nil, true
	}
	now := p.account(j, resp, err)
	// The instance is free again before the caller can look or invoke
	// again, so a caller that invokes at once finds it.
	if inst.alive() {
		next, gone = p.settle(w, now)
	}
	j.done <- struct{}{} // j may be recycled by its caller from here on
	return next, gone
}

// account counts a finished invocation, turns a failure at the deadline
// into the timeout error, and stores the outcome in j. It returns when.
func (p *pool) account(j *job, resp invoke.Response, err error) (now time.Time) {
	// The monotonic clock alone: half the cost of time.Now.
	d := time.Since(j.submitted)
	now = j.submitted.Add(d)
	timedOut := err != nil && !now.Before(j.deadline) && j.parent.Err() == nil
	if timedOut {
		err = p.timeoutError() // the function gave up at its deadline
	}
	p.fn.stats.invocations.Add(1)
	p.fn.stats.durations.observe(d)
	switch {
	case timedOut:
		p.fn.stats.timeouts.Add(1)
		p.fn.setLastError(err)
	case err != nil:
		p.fn.stats.errors.Add(1)
		p.fn.setLastError(err)
	}
	j.resp, j.err = resp, err
	return now
}

// countAbandoned counts an invocation its caller gave up on.
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

// close stops taking invocations; queued and running ones finish, then the
// workers exit. wait blocks until they have.
func (p *pool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	for _, w := range p.free {
		w.jobs <- nil // never blocks: a parked worker's channel is empty
	}
	p.mu.Unlock()
	close(p.quit)
}

// wait waits for the pool's workers to stop their instances, or for ctx.
func (p *pool) wait(ctx context.Context) error {
	if err := drain.Wait(ctx, &p.wg, func() {}); err != nil {
		return fmt.Errorf("function %s version %s: waiting for instances to stop: %w", p.spec.Name, p.spec.Version, err)
	}
	p.watch.Stop() // nothing is left for it to time out
	return nil
}
