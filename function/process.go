package function

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgekit/edgekit/function/logstore"
	"github.com/edgekit/edgekit/internal/procstat"
	"github.com/edgekit/edgekit/invoke"
)

// processInstance is an out-of-process instance: a child process that pulls
// invocations from its own runtime API endpoint on a loopback port, or
// exchanges native protocol frames over pipes.
type processInstance struct {
	spec   Spec
	id     string
	api    *runtimeAPI // Lambda or FC runtime API, or
	native *nativeConn // the native framed protocol
	srv    *http.Server
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	grace  time.Duration
	// deadline bounds a runtime API invocation's wait, armed for
	// deadlineAt (zero: not armed); used by one invocation at a time.
	deadline   *time.Timer
	deadlineAt time.Time

	limit *limit
	log   *slog.Logger // carries function, version and instance
	// logs and hostLog (which carries the same) are where the REPORT
	// records go, without slog's work per record (see report).
	logs    *logstore.Store
	hostLog *slog.Logger

	// peerReady is closed once the process runs inside its limits: the
	// runtime API's peer check may then read cmd and limit.
	peerReady chan struct{}

	// dead is set when the host kills the process: from then on the
	// instance is not handed out, though its exit may take a moment.
	dead atomic.Bool

	// out and errOut are stdout and stderr; request is the invocation
	// under way, whose request id their lines carry.
	out, errOut *outputPipe
	request     atomic.Pointer[Invocation]

	rssAt   time.Time // when peakRSS was last read (run's goroutine only)
	rssKB   int64
	mu      sync.Mutex
	waitErr error
	tail    []string // last output lines, for exit errors
	stopped bool
}

// launcher starts process instances with what the host provides.
type launcher struct {
	log          *slog.Logger // the host's, keeping what it logs about a function
	hostLog      *slog.Logger // the host's as given (Options.Logger)
	logs         *logstore.Store
	env          []string // inherited host variables (PATH, HOME, locale)
	envFor       func(Spec) map[string]string
	bootstrapDir string
	mem          *memoryLimiter
	metric       func(function, name string, v float64)
	peerCheck    bool // the runtime API checks who connects (peer.go)
	calls        CallHandler
}

// baseEnv is what an instance of spec inherits before the variables of
// the runtime API: the host's, then the function's own from EnvFor.
func (l *launcher) baseEnv(spec Spec) []string {
	env := append([]string{}, l.env...)
	if l.envFor != nil {
		own := l.envFor(spec)
		for _, k := range slices.Sorted(maps.Keys(own)) {
			env = append(env, k+"="+own[k])
		}
	}
	return env
}

// startupTimeout bounds a start: process launch to its first /next.
const startupTimeout = 10 * time.Second

// start starts an instance and waits until it asks for its first
// invocation. config, when set, is the function's configuration now (a
// native instance's is changed while it runs); nil: spec's. On failure
// nothing is left running.
func (l *launcher) start(ctx context.Context, spec Spec, id string, config func() json.RawMessage) (*processInstance, error) {
	exe, args, err := command(spec, l.bootstrapDir)
	if err != nil {
		return nil, err
	}
	pi := &processInstance{spec: spec, id: id, exited: make(chan struct{}), grace: 2 * time.Second}
	cmd := exec.Command(exe, args...)
	cmd.Dir = spec.CodeDir
	cmd.SysProcAttr = processGroupAttr()
	if u := spec.User; u != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: u.UID, Gid: u.GID, NoSetGroups: true}
	}
	var childFiles []*os.File
	if spec.API == APINative {
		ps, err := newNativePipes()
		if err != nil {
			return nil, fmt.Errorf("function %s: native protocol pipes: %w", spec.Name, err)
		}
		childFiles = ps.child
		cmd.ExtraFiles = childFiles // fds 3, 4, 5 and 6
		pi.native = newNativeConn(spec, id, config, ps, l.calls,
			l.log.With("function", spec.Name, "version", spec.Version, "instance", id),
			func(name string, v float64) { l.metric(spec.Name, name, v) })
		cmd.Env = append(l.baseEnv(spec), l.instanceEnv(spec, id, nil, "")...)
	} else {
		p, ok := profiles[spec.API]
		if !ok {
			return nil, fmt.Errorf("function %s: unknown runtime API %q", spec.Name, spec.API)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("function %s: runtime API listener: %w", spec.Name, err)
		}
		var key [16]byte
		_, _ = rand.Read(key[:])
		secret := hex.EncodeToString(key[:])
		var peer func(net.Conn) error
		if l.peerCheck {
			peer = pi.checkPeer
		}
		pi.peerReady = make(chan struct{})
		pi.api = newRuntimeAPI(p, spec, secret, peer, l.log)
		// A connection that sends no request headers within 10 s is
		// closed; one that is not the instance's is refused at its first
		// request, before its body is read, and closed. No ReadTimeout or
		// IdleTimeout: the instance's own connections idle as long as it
		// does between invocations (the Python bootstrap does not
		// reconnect), and only the instance can be slow in sending a body.
		// Per-request deadlines cost ~3% of a warm invoke, measured.
		pi.srv = &http.Server{Handler: pi.api, ReadHeaderTimeout: 10 * time.Second, ConnContext: connContext}
		go func() { _ = pi.srv.Serve(ln) }()
		// The secret rides in the address, as a path prefix: every
		// runtime API client joins "http://" + address + "/2018-06-01/...".
		cmd.Env = append(l.baseEnv(spec), l.instanceEnv(spec, id, p, ln.Addr().String()+"/"+secret)...)
	}
	// stdout and stderr are pipes of our own, not exec's: the exit is
	// learnt from the process (waitid), never from the pipes' end, which a
	// child that outlives the instance could hold open.
	if pi.out, err = newOutputPipe("stdout", slog.LevelInfo); err == nil {
		if pi.errOut, err = newOutputPipe("stderr", slog.LevelWarn); err != nil {
			pi.out.close()
		}
	}
	if err != nil {
		for _, f := range childFiles {
			f.Close()
		}
		pi.closeTransport()
		return nil, fmt.Errorf("function %s: output pipes: %w", spec.Name, err)
	}
	cmd.Stdout, cmd.Stderr = pi.out.child, pi.errOut.child
	cleanup := func() {
		for _, f := range childFiles {
			f.Close()
		}
		pi.out.close()
		pi.errOut.close()
		pi.closeTransport()
	}
	if pi.limit, err = l.mem.prepare(spec.Name+"-"+id, spec.MemoryLimitMB, spec.MaxProcesses, cmd.SysProcAttr); err != nil {
		cleanup()
		return nil, fmt.Errorf("function %s version %s: limits: %w", spec.Name, spec.Version, err)
	}
	if err := cmd.Start(); err != nil {
		cleanup()
		pi.limit.release()
		return nil, fmt.Errorf("function %s version %s: starting %s: %w", spec.Name, spec.Version, exe, err)
	}
	for _, f := range childFiles {
		f.Close() // the child has its copies
	}
	pi.out.started()
	pi.errOut.started()
	pi.cmd = cmd
	if err := pi.limit.enter(cmd.Process.Pid, pi.uid()); err != nil {
		if pi.peerReady != nil {
			close(pi.peerReady) // a connection waiting for the check is refused: no pids
		}
		pi.kill()
		_ = cmd.Wait()
		pi.out.close()
		pi.errOut.close()
		pi.closeTransport()
		pi.limit.killAll()
		pi.limit.release()
		return nil, fmt.Errorf("function %s version %s: limits: %w", spec.Name, spec.Version, err)
	}
	if pi.peerReady != nil {
		close(pi.peerReady)
	}
	if pi.native != nil {
		pi.native.start()
	}
	flog := l.log.With("function", spec.Name, "version", spec.Version, "instance", id)
	pi.log, pi.logs, pi.hostLog = flog, l.logs, l.hostLog.With("function", spec.Name, "version", spec.Version, "instance", id)
	var lines sync.WaitGroup
	lines.Add(2)
	for _, o := range []*outputPipe{pi.out, pi.errOut} {
		go func() {
			defer lines.Done()
			o.lines(flog, pi.currentRequest, pi.keepTail)
		}()
	}
	go pi.reap(&lines)

	ready, initErr, started := pi.readiness()
	t := time.NewTimer(startupTimeout)
	defer t.Stop()
	select {
	case <-ready:
		return pi, nil
	case err := <-initErr:
		pi.stop()
		return nil, fmt.Errorf("function %s version %s: init error: %w", spec.Name, spec.Version, err)
	case <-pi.exited:
		// An init error the function reported before it exited may still
		// be on its way (the native protocol's reply pipe is read by a
		// goroutine of its own): it says more than the exit.
		drained := time.NewTimer(outputDrain)
		defer drained.Stop()
		select {
		case <-started:
		case <-drained.C:
		}
		select {
		case err := <-initErr:
			pi.stop()
			return nil, fmt.Errorf("function %s version %s: init error: %w", spec.Name, spec.Version, err)
		default:
		}
		pi.stop()
		return nil, fmt.Errorf("function %s version %s: %w", spec.Name, spec.Version, pi.exitError("exited before asking for its first invocation"))
	case <-t.C:
		pi.stop()
		return nil, fmt.Errorf("function %s version %s: %w within %v", spec.Name, spec.Version, errNotReady, startupTimeout)
	case <-ctx.Done():
		pi.stop()
		return nil, fmt.Errorf("function %s version %s: starting: %w", spec.Name, spec.Version, ctx.Err())
	}
}

// checkPeer reports whether the runtime API connection c comes from the
// instance's processes: those in its cgroups, else its process group.
func (pi *processInstance) checkPeer(c net.Conn) error {
	t := time.NewTimer(startupTimeout)
	defer t.Stop()
	select {
	case <-pi.peerReady: // a connection may come before start has the pid
	case <-t.C:
		return fmt.Errorf("%w: the instance did not start", errForeignPeer)
	}
	var pids []int
	for _, dir := range pi.limit.procDirs() {
		pids = append(pids, cgroupProcs(dir)...)
	}
	if len(pids) == 0 {
		pids = groupMembers(pi.cmd.Process.Pid)
	}
	return checkPeer(c, pi.uid(), pids)
}

// uid is the user the instance's process runs as.
func (pi *processInstance) uid() int {
	if c := pi.cmd.SysProcAttr.Credential; c != nil {
		return int(c.Uid)
	}
	return os.Getuid()
}

// outputDrain is how long output is still read after an instance's
// process exited: what it wrote before its exit is in the pipes already,
// and a pipe still open after this is held by a process that escaped the
// instance's kill, so it is closed.
const outputDrain = 200 * time.Millisecond

// reap waits for the instance's process to exit, kills what is left of
// the instance (its process group, and every process in its cgroups: a
// child that called setsid too), reads the output written before the exit,
// and then reports the exit (pi.exited).
func (pi *processInstance) reap(lines *sync.WaitGroup) {
	pid := pi.cmd.Process.Pid
	// WNOWAIT leaves the process a zombie, so that its process group id
	// cannot be taken by another process while the group is killed.
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	pi.limit.killAll()
	err := pi.cmd.Wait()
	drain := time.Now().Add(outputDrain)
	for _, o := range []*outputPipe{pi.out, pi.errOut} {
		o.closeWrite()
		_ = o.r.SetReadDeadline(drain)
	}
	lines.Wait()
	pi.out.close()
	pi.errOut.close()
	pi.mu.Lock()
	pi.waitErr = err
	pi.mu.Unlock()
	close(pi.exited)
	if pi.native != nil {
		pi.native.interrupt() // a caller waiting for a reply sees the exit
	}
}

// readiness returns the transport's "ready" and "init failed" signals, and
// one closed once the first of them can no longer be on its way.
func (pi *processInstance) readiness() (ready <-chan struct{}, initErr <-chan error, started <-chan struct{}) {
	if pi.native != nil {
		return pi.native.ready, pi.native.initErr, pi.native.started
	}
	// /init/error is answered before the runtime exits.
	done := make(chan struct{})
	close(done)
	return pi.api.ready, pi.api.initErr, done
}

// command returns what to execute for spec's runtime.
func command(spec Spec, bootstrapDir string) (string, []string, error) {
	switch spec.Runtime {
	case RuntimeExecutable:
		exe, err := executable(spec)
		return exe, nil, err
	case RuntimeNode, RuntimePython:
		it := interpreterFor(spec.Runtime)
		bin, err := exec.LookPath(it.bin)
		if err != nil {
			return "", nil, fmt.Errorf("function %s: runtime %s: %s is not installed (Debian package %s): %w", spec.Name, spec.Runtime, it.bin, it.debian, err)
		}
		script := it.lambda
		if spec.API == APINative {
			script = it.native
		}
		return bin, append(it.args, filepath.Join(bootstrapDir, script)), nil
	default:
		return "", nil, fmt.Errorf("function %s: runtime %q: %w", spec.Name, spec.Runtime, errors.ErrUnsupported)
	}
}

// executable is the program an executable function runs: its handler when
// that names an executable file in the code directory, else the code
// directory's bootstrap, as Lambda's custom runtimes (where the handler is
// what _HANDLER tells the runtime client, "index.handler" for
// aws-lambda-ric).
func executable(spec Spec) (string, error) {
	isExe := func(p string) bool {
		st, err := os.Stat(p)
		return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
	}
	exe := spec.Handler
	if !filepath.IsAbs(exe) {
		exe = filepath.Join(spec.CodeDir, exe)
	}
	if isExe(exe) {
		return exe, nil
	}
	if boot := filepath.Join(spec.CodeDir, "bootstrap"); isExe(boot) {
		return boot, nil
	}
	return "", fmt.Errorf("function %s version %s: handler %q is not an executable file in %s, and there is no executable bootstrap beside it", spec.Name, spec.Version, spec.Handler, spec.CodeDir)
}

// interpreter is how an interpreted runtime is started.
type interpreter struct {
	bin, debian    string   // executable and the Debian package that has it
	args           []string // before the bootstrap script
	lambda, native string   // bootstrap scripts, by protocol
}

func interpreterFor(r Runtime) interpreter {
	if r == RuntimePython {
		return interpreter{bin: "python3", debian: "python3", args: []string{"-u"}, lambda: "bootstrap.py", native: "native.py"}
	}
	return interpreter{bin: "node", debian: "nodejs", lambda: "bootstrap.js", native: "native.js"}
}

// instanceEnv is what the function's service defines for a function
// process (docs/CLOUD.md has the tables), its runtime API's address, and
// edgekit's own variables. AWS_EXECUTION_ENV is set by the bootstraps,
// which know their interpreter's version.
func (l *launcher) instanceEnv(spec Spec, id string, p *profile, addr string) []string {
	var env []string
	// The service's variables; the spec's own come last, and may only
	// replace the defaults AWS_REGION, AWS_DEFAULT_REGION and TZ (Resolve).
	if spec.Service == ServiceFC {
		env = append(env,
			"FC_FUNC_CODE_PATH="+spec.CodeDir,
			"FC_FUNCTION_NAME="+spec.Name,
			"FC_FUNCTION_HANDLER="+spec.Handler,
			"FC_FUNCTION_MEMORY_SIZE="+strconv.Itoa(spec.MemoryLimitMB),
			"FC_FUNCTION_VERSION="+spec.Version,
			"FC_VER_ID="+spec.Version,
			"FC_QUALIFIER="+spec.Version,
			"FC_SERVICE_NAME="+spec.Name,
			"FC_REGION="+edgeRegion,
			"FC_ACCOUNT_ID="+edgeAccount,
			"FC_INSTANCE_ID="+id,
		)
	} else {
		env = append(env,
			"AWS_REGION="+edgeRegion,
			"AWS_DEFAULT_REGION="+edgeRegion,
			"TZ=:UTC",
			"AWS_LAMBDA_FUNCTION_NAME="+spec.Name,
			"AWS_LAMBDA_FUNCTION_VERSION="+spec.Version,
			"AWS_LAMBDA_FUNCTION_MEMORY_SIZE="+strconv.Itoa(spec.MemoryLimitMB),
			"AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/"+spec.Name,
			"AWS_LAMBDA_LOG_STREAM_NAME="+time.Now().UTC().Format("2006/01/02")+"/["+spec.Version+"]"+id,
			"AWS_LAMBDA_INITIALIZATION_TYPE="+initializationType(spec.Mode),
			"LAMBDA_TASK_ROOT="+spec.CodeDir,
			"LAMBDA_RUNTIME_DIR="+l.bootstrapDir,
		)
	}
	// Both bootstraps and aws-lambda-ric read the handler from _HANDLER.
	env = append(env, "_HANDLER="+spec.Handler)
	if p != nil {
		env = append(env, p.envVar+"="+addr)
	} else {
		env = append(env, "EDGEKIT_NATIVE=1")
	}
	if spec.Runtime == RuntimeNode {
		// require('edgekit') finds the host's module after the function's
		// own node_modules and before what the spec's NODE_PATH names.
		np := filepath.Join(l.bootstrapDir, nodeModules)
		if own := spec.Env["NODE_PATH"]; own != "" {
			np += string(os.PathListSeparator) + own
		}
		env = append(env, "NODE_PATH="+np)
	}
	// What the bootstraps need of the runtime API's headers when they
	// speak the native protocol: the ARN and the timeout in seconds.
	env = append(env,
		"EDGEKIT_SERVICE="+string(spec.Service),
		"EDGEKIT_FUNCTION_ARN="+functionARN(spec),
		"EDGEKIT_FUNCTION_TIMEOUT="+strconv.Itoa(int(time.Duration(spec.Timeout).Seconds())),
		"EDGEKIT_FUNCTION_CONFIG="+string(spec.Config),
	)
	if spec.Runtime == RuntimePython {
		// Installed code directories are immutable: no __pycache__ in them.
		env = append(env, "PYTHONDONTWRITEBYTECODE=1")
	}
	for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
		if k == "NODE_PATH" && spec.Runtime == RuntimeNode {
			continue // joined to the host's above
		}
		env = append(env, k+"="+spec.Env[k])
	}
	return env
}

// initializationType is Lambda's AWS_LAMBDA_INITIALIZATION_TYPE for a run
// mode: instances kept running are Lambda's provisioned concurrency.
func initializationType(m Mode) string {
	if m == Continuous {
		return "provisioned-concurrency"
	}
	return "on-demand"
}

// keepTail keeps an output line among the last ten, for exit errors.
func (pi *processInstance) keepTail(line string) {
	pi.mu.Lock()
	pi.tail = append(pi.tail, line)
	if len(pi.tail) > 10 {
		pi.tail = pi.tail[1:]
	}
	pi.mu.Unlock()
}

// currentRequest is the request id of the invocation under way, or "".
func (pi *processInstance) currentRequest() string {
	if inv := pi.request.Load(); inv != nil {
		return inv.RequestID()
	}
	return ""
}

// settleOutput returns once the output the process wrote during the
// invocation that began at marks is logged (see outputPipe), or after
// fenceWait.
func (pi *processInstance) settleOutput(marks [2]int64) {
	var fences [2]int64
	pipes := [2]*outputPipe{pi.out, pi.errOut}
	var wrote [2]bool
	wrote[0], wrote[1] = pending(pi.out, pi.errOut, marks[0], marks[1])
	var deadline time.Time
	for i, o := range pipes {
		if !wrote[i] {
			continue
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(fenceWait)
		}
		fences[i] = o.fence(deadline)
	}
	if deadline.IsZero() {
		return
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for i, o := range pipes {
		if fences[i] > 0 && !o.await(fences[i], t) {
			return
		}
	}
}

func (pi *processInstance) exitError(what string) error {
	pi.mu.Lock()
	defer pi.mu.Unlock()
	if pi.limit.oomKilled() {
		return &invoke.Error{Function: pi.spec.Name, Version: pi.spec.Version, Type: "Runtime.OutOfMemory",
			Message: fmt.Sprintf("%s: killed for exceeding its memory limit (%s)", what, pi.limit)}
	}
	return &invoke.Error{Function: pi.spec.Name, Version: pi.spec.Version, Type: "Runtime.ExitError",
		Message: fmt.Sprintf("%s: %v; last output: %s", what, pi.waitErr, strings.Join(pi.tail, " | "))}
}

// run hands one invocation to the runtime and waits for its answer, the
// deadline, or the process's exit. At the deadline the process group is
// killed: the instance is dead afterwards (alive reports false).
func (pi *processInstance) run(ctx *invCtx, req invoke.Request) (invoke.Response, error) {
	start := time.Now()
	id := ctx.inv.RequestID()
	// Output lines carry the request id, and are logged before the REPORT.
	marks := [2]int64{pi.out.mark(), pi.errOut.mark()}
	pi.request.Store(&ctx.inv)
	var resp invoke.Response
	var err error
	quiet := false
	if pi.native != nil {
		resp, err = pi.runNative(ctx, req, id, start)
		// A function that counts its output (the bootstraps) says in its
		// reply whether it wrote any; otherwise the pipes are asked.
		var fe *invoke.Error
		quiet = (err == nil || errors.As(err, &fe)) && pi.native.quiet()
	} else {
		resp, err = pi.runAPI(ctx, req, id, start)
	}
	if !quiet {
		pi.settleOutput(marks)
	}
	pi.request.Store(nil)
	d := time.Since(start)
	pi.report(start.Add(d), id, d, err)
	return resp, err
}

// report logs the invocation's REPORT record: duration, the instance's peak
// resident memory so far, and the outcome.
//
// One is written per invocation, so it goes to the log store as a record
// made here, not through slog (whose caller lookup and attribute handling
// cost more than the rest of the host's work on a warm native
// invocation), and to the host's own logger only when that takes Info.
func (pi *processInstance) report(now time.Time, requestID string, d time.Duration, err error) {
	outcome := "ok"
	if err != nil {
		outcome = err.Error()
	}
	// The peak only grows; reading /proc costs more than the rest of the
	// record, so it is read at most once a second.
	if now.Sub(pi.rssAt) > time.Second {
		pi.rssAt, pi.rssKB = now, procstat.KB(pi.cmd.Process.Pid, "VmHWM")
	}
	ms := float64(d.Microseconds()) / 1e3
	rec := logstore.Record{Time: now, Level: slog.LevelInfo, Message: "REPORT", Function: pi.spec.Name, Version: pi.spec.Version, Instance: pi.id, RequestID: requestID,
		// As slog would write them.
		Attrs: map[string]string{"duration_ms": strconv.FormatFloat(ms, 'g', -1, 64), "max_rss_kb": strconv.FormatInt(pi.rssKB, 10), "outcome": outcome}}
	if err := pi.logs.Append(rec); err != nil {
		pi.hostLog.Warn("function: keeping the REPORT record", "err", err)
	}
	if ctx := context.Background(); pi.hostLog.Enabled(ctx, slog.LevelInfo) {
		pi.hostLog.LogAttrs(ctx, slog.LevelInfo, "REPORT", slog.String("request_id", requestID),
			slog.Float64("duration_ms", ms), slog.Int64("max_rss_kb", pi.rssKB), slog.String("outcome", outcome))
	}
}

func (pi *processInstance) runAPI(ctx *invCtx, req invoke.Request, id string, now time.Time) (invoke.Response, error) {
	c := &call{
		id: id, req: req, deadline: ctx.inv.Deadline,
		result: make(chan callResult, 1),
	}
	if !pi.alive() {
		return invoke.Response{}, pi.notTaken()
	}
	return pi.await(ctx, c, pi.deadlineC(ctx.inv.Deadline, now))
}

// await sends c to the runtime API and waits for its result, the
// process's exit, the caller's cancellation or the deadline (expired fires
// by it; both of those kill the process group).
func (pi *processInstance) await(ctx *invCtx, c *call, expired <-chan time.Time) (invoke.Response, error) {
	calls, result := pi.api.calls, (<-chan callResult)(nil)
	for {
		select {
		case calls <- c:
			calls, result = nil, c.result
		case r := <-result:
			return r.resp, r.err
		case <-pi.exited:
			if result == nil {
				return invoke.Response{}, pi.notTaken()
			}
			return invoke.Response{}, pi.exitError("exited during the invocation")
		case <-ctx.parent.Done():
			pi.kill()
			return invoke.Response{}, ctx.parent.Err()
		case <-expired:
			if expired = pi.rearm(ctx.inv.Deadline); expired == nil {
				pi.kill()
				return invoke.Response{}, context.DeadlineExceeded
			}
		}
	}
}

// deadlineC returns a channel that receives by deadline; now is the time.
// The instance's one timer is moved only when an earlier invocation's
// deadline does not serve (earlierServes): in the steady state an
// invocation arms no timer (rearm sets this one's when that fires first).
func (pi *processInstance) deadlineC(deadline, now time.Time) <-chan time.Time {
	switch {
	case pi.deadline == nil:
		pi.deadline = time.NewTimer(deadline.Sub(now))
	case !earlierServes(pi.deadlineAt, deadline, now):
		pi.deadline.Reset(deadline.Sub(now)) // drops a value it may hold
	default:
		return pi.deadline.C
	}
	pi.deadlineAt = deadline
	return pi.deadline.C
}

// rearm is called when the timer fired: it returns the channel again,
// armed for deadline, or nil when deadline has come.
func (pi *processInstance) rearm(deadline time.Time) <-chan time.Time {
	pi.deadlineAt = time.Time{}
	now := time.Now()
	if !now.Before(deadline) {
		return nil
	}
	return pi.deadlineC(deadline, now)
}

// runNative sends the invocation and reads its reply on the caller's
// goroutine. The wait ends at the deadline, when the caller's context ends,
// or when the process exits (both interrupt the read).
func (pi *processInstance) runNative(ctx *invCtx, req invoke.Request, id string, now time.Time) (invoke.Response, error) {
	c := pi.native
	if err := c.setDeadline(ctx.inv.Deadline, now); err != nil {
		return invoke.Response{}, pi.exitError(err.Error())
	}
	// From here on an exit interrupts the read (see start), so checking
	// now leaves no gap.
	if !pi.alive() {
		return invoke.Response{}, pi.notTaken()
	}
	if ctx.parent.Done() != nil {
		interrupted := make(chan struct{})
		stop := context.AfterFunc(ctx.parent, func() { c.interrupt(); close(interrupted) })
		defer func() {
			if !stop() {
				<-interrupted // or it could cut the next invocation's read short
			}
		}()
	}
	if err := c.send(ctx.inv.seq, ctx.inv.Deadline, id, req.Source, req.Trace, req.Payload); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) && pi.alive() {
			// The function stopped reading its invocations.
			pi.kill()
			return invoke.Response{}, context.DeadlineExceeded
		}
		// The process closed its end before it had the whole frame: it
		// never took the invocation.
		pi.broken()
		return invoke.Response{}, pi.notTaken()
	}
	for {
		resp, err := c.reply(ctx.inv.seq)
		var fe *invoke.Error
		switch {
		case err == nil || errors.As(err, &fe):
			return resp, err
		case !errors.Is(err, os.ErrDeadlineExceeded):
			return invoke.Response{}, pi.broken()
		case !pi.alive():
			return invoke.Response{}, pi.exitError("exited during the invocation")
		case ctx.parent.Err() != nil:
			pi.kill()
			return invoke.Response{}, ctx.parent.Err()
		}
		now := time.Now()
		if !now.Before(ctx.inv.Deadline) {
			pi.kill()
			return invoke.Response{}, context.DeadlineExceeded
		}
		// Interrupted for no reason that still holds, or the pipes'
		// deadline was an earlier invocation's: wait on.
		if err := c.setDeadline(ctx.inv.Deadline, now); err != nil {
			return invoke.Response{}, pi.exitError(err.Error())
		}
	}
}

// broken ends an instance that closed its end of the protocol, and says
// how it went.
func (pi *processInstance) broken() error {
	pi.kill()
	select {
	case <-pi.exited:
	case <-time.After(pi.grace):
	}
	return pi.exitError("exited during the invocation")
}

// notTaken is the error for an invocation the process never took: it had
// died, or died before it took it. The pool gives such an invocation to
// another instance.
func (pi *processInstance) notTaken() error {
	return &notTakenError{cause: pi.exitError("exited before taking the invocation")}
}

// notTakenError is errNotTaken with the exit that caused it, which is what
// the caller gets when the invocation cannot go elsewhere.
type notTakenError struct{ cause error }

func (e *notTakenError) Error() string        { return errNotTaken.Error() + ": " + e.cause.Error() }
func (e *notTakenError) Unwrap() error        { return e.cause }
func (e *notTakenError) Is(target error) bool { return target == errNotTaken }

func (pi *processInstance) alive() bool {
	if pi.dead.Load() {
		return false
	}
	select {
	case <-pi.exited:
		return false
	default:
		return true
	}
}

// kill ends the whole process group at once.
func (pi *processInstance) kill() {
	pi.dead.Store(true)
	if pi.cmd != nil && pi.cmd.Process != nil {
		_ = syscall.Kill(-pi.cmd.Process.Pid, syscall.SIGKILL)
		pi.limit.signalAll() // reap kills what is left once the process is gone
	}
}

// stop asks the process group to end (SIGTERM), kills it after the grace
// period, and closes the runtime API. It is safe to call more than once.
func (pi *processInstance) stop() {
	pi.mu.Lock()
	if pi.stopped {
		pi.mu.Unlock()
		return
	}
	pi.stopped = true
	pi.mu.Unlock()
	if pi.cmd != nil && pi.cmd.Process != nil {
		_ = syscall.Kill(-pi.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-pi.exited: // reap killed what was left of the instance
		case <-time.After(pi.grace):
			pi.kill()
			<-pi.exited
		}
	}
	pi.limit.release()
	pi.closeTransport()
}

// closeTransport closes the runtime API server or the protocol pipes.
func (pi *processInstance) closeTransport() {
	if pi.native != nil {
		pi.native.close()
	}
	if pi.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := pi.srv.Shutdown(ctx); err != nil {
		_ = pi.srv.Close() // a /next long poll holds its connection
	}
}

// configure sends a native instance its changed configuration; a failed
// write (the instance is exiting) is logged.
func (pi *processInstance) configure(cfg json.RawMessage) {
	if err := pi.native.configure(cfg); err != nil {
		pi.log.Warn("function: the changed configuration did not reach the instance", "err", err)
	}
}
