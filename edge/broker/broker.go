// Package broker runs the gateway's local MQTT v5 broker: Mosquitto (the
// Debian package mosquitto, 2.x) as a child process the gateway owns. LAN
// devices, out-of-process functions and container applications connect to it;
// the gateway bridges it to its in-process bus (package edge/bus/bridge).
//
// The Broker writes mosquitto.conf, a password file (PBKDF2 hashes) and an
// ACL file from Go options into its data directory, starts Mosquitto, waits
// until it listens, restarts it with backoff when it dies, and stops it on
// Close. Retained messages and persistent sessions are saved in the data
// directory and survive restarts (on a clean stop always; after a crash, as of
// the last autosave). Anonymous clients may connect only on loopback listeners
// unless configured otherwise.
//
// Lifecycle: New validates the options; Start starts Mosquitto and returns
// once it accepts connections; Stop stops it and keeps the Broker for another
// Start; Close stops it for good and is safe to call twice. All methods are
// safe for concurrent use. The broker process gets SIGKILL if the gateway
// process dies (Linux).
//
// The in-process Go broker mochi-mqtt was measured on these gateways and
// deadlocks under sustained QoS 1 load; see docs/ARCHITECTURE.md.
package broker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/edgekit/edgekit/internal/backoff"
)

// Sentinel errors.
var (
	// ErrNotInstalled means the mosquitto executable was not found.
	ErrNotInstalled = errors.New("mosquitto is not installed (install the Debian package mosquitto)")
	// ErrConfig means the options are invalid; the message names the field.
	ErrConfig = errors.New("invalid broker configuration")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("broker closed")
	// ErrNotReady means Mosquitto did not accept connections in time or
	// exited while starting; the message carries its last log lines.
	ErrNotReady = errors.New("mosquitto did not become ready")
)

// State is where the broker process is in its lifecycle.
type State string

// The broker states.
const (
	StateStopped    State = "stopped"
	StateStarting   State = "starting"
	StateRunning    State = "running"
	StateRestarting State = "restarting" // died; waiting out the backoff
	StateClosed     State = "closed"
)

// Status is a snapshot of the broker.
type Status struct {
	State    State
	PID      int       // 0 when no process runs
	Since    time.Time // when State was entered
	Restarts int       // restarts after unexpected exits
	// LastError is why the process last exited unexpectedly or failed to
	// start, with its last log lines.
	LastError error
}

// Broker is a supervised Mosquitto process.
type Broker struct {
	cfg    *resolved
	binary string
	log    *slog.Logger

	mu     sync.Mutex
	status Status
	closed bool
	stop   chan struct{} // closed to end the current supervision
	done   chan struct{} // closed when the supervisor has exited
}

// New validates opts, picks free ports for ":0" listeners and finds the
// mosquitto executable. It does not start anything.
func New(opts *Options) (*Broker, error) {
	if opts == nil {
		return nil, fmt.Errorf("%w: nil options (DataDir is required)", ErrConfig)
	}
	cfg, err := resolve(*opts)
	if err != nil {
		return nil, fmt.Errorf("edge/broker: %w", err)
	}
	bin, err := findBinary(cfg.Binary)
	if err != nil {
		return nil, fmt.Errorf("edge/broker: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Broker{
		cfg:    cfg,
		binary: bin,
		log:    log.With("component", "broker"),
		status: Status{State: StateStopped, Since: time.Now()},
	}, nil
}

func findBinary(bin string) (string, error) {
	if bin != "" {
		p, err := exec.LookPath(bin)
		if err != nil {
			return "", fmt.Errorf("%w: %q: %v", ErrNotInstalled, bin, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	const debian = "/usr/sbin/mosquitto"
	if _, err := os.Stat(debian); err == nil {
		return debian, nil
	}
	return "", fmt.Errorf("%w: not in PATH nor at /usr/sbin/mosquitto", ErrNotInstalled)
}

// Addrs returns the listeners' host:port addresses, ports resolved.
func (b *Broker) Addrs() []string {
	out := make([]string, len(b.cfg.listeners))
	for i, l := range b.cfg.listeners {
		out[i] = l.Address
	}
	return out
}

// URL returns the first listener as an mqtt:// or mqtts:// URL.
func (b *Broker) URL() *url.URL {
	l := b.cfg.listeners[0]
	scheme := "mqtt"
	if l.TLS != nil {
		scheme = "mqtts"
	}
	return &url.URL{Scheme: scheme, Host: l.Address}
}

// ConfigPath returns the generated mosquitto.conf.
func (b *Broker) ConfigPath() string { return b.cfg.confPath() }

// Status returns a snapshot of the broker's state.
func (b *Broker) Status() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.status
}

func (b *Broker) setState(s State, pid int) {
	b.mu.Lock()
	b.status.State, b.status.PID, b.status.Since = s, pid, time.Now()
	b.mu.Unlock()
	b.log.Info("broker state", "state", string(s), "pid", pid)
}

// Start writes the configuration, starts Mosquitto and waits until it
// accepts connections on every listener (or ctx ends, or ReadyTimeout
// passes). From then on the broker is supervised: restarted with backoff if
// it exits. Start on a running broker does nothing.
func (b *Broker) Start(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return fmt.Errorf("edge/broker: start: %w", ErrClosed)
	}
	if b.stop != nil {
		b.mu.Unlock()
		return nil
	}
	if err := b.cfg.writeFiles(); err != nil {
		b.mu.Unlock()
		return fmt.Errorf("edge/broker: writing configuration in %s: %w", b.cfg.DataDir, err)
	}
	stop, done, ready := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	b.stop, b.done = stop, done
	b.mu.Unlock()

	go b.supervise(stop, done, ready)
	select {
	case err := <-ready:
		if err != nil {
			_ = b.Stop(context.Background())
			return err
		}
		return nil
	case <-ctx.Done():
		_ = b.Stop(context.Background())
		return fmt.Errorf("edge/broker: start: %w", ctx.Err())
	}
}

// supervise runs Mosquitto until stop is closed, restarting it with backoff.
// The first start's outcome goes to ready.
func (b *Broker) supervise(stop <-chan struct{}, done chan<- struct{}, ready chan<- error) {
	defer close(done)
	policy := backoff.Policy{Min: b.cfg.RestartMin, Max: b.cfg.RestartMax}
	attempt := 0
	first := true
	for {
		b.setState(StateStarting, 0)
		p, err := b.launch()
		if err == nil {
			err = p.waitReady(stop, b.cfg.ReadyTimeout)
			if err != nil {
				p.kill()
				<-p.exited
			}
		}
		if err == nil {
			// Running is set before the first start's outcome goes to
			// ready, so Status right after Start returns says running.
			b.setState(StateRunning, p.cmd.Process.Pid)
		}
		if first {
			first = false
			if err != nil {
				b.recordError(err)
				b.setState(StateStopped, 0)
			}
			ready <- err
			if err != nil {
				return
			}
		}
		var ranFor time.Duration
		if err == nil {
			started := time.Now()
			select {
			case <-p.exited:
				err = fmt.Errorf("mosquitto (pid %d) exited: %v; last log lines: %s", p.cmd.Process.Pid, p.waitErr, p.tail())
				ranFor = time.Since(started)
			case <-stop:
				p.terminate(b.cfg.StopTimeout)
				b.setState(StateStopped, 0)
				return
			}
		}
		b.recordError(err)
		b.log.Error("broker exited unexpectedly; restarting", "err", err)
		if ranFor > time.Minute {
			attempt = 0
		}
		delay := policy.Delay(attempt)
		attempt++
		b.mu.Lock()
		b.status.Restarts++
		b.mu.Unlock()
		b.setState(StateRestarting, 0)
		select {
		case <-time.After(delay):
		case <-stop:
			b.setState(StateStopped, 0)
			return
		}
	}
}

func (b *Broker) recordError(err error) {
	if err == nil {
		return
	}
	b.mu.Lock()
	b.status.LastError = err
	b.mu.Unlock()
}

// Stop stops Mosquitto (SIGTERM, then SIGKILL after StopTimeout) and waits
// for it to exit. The persistence database is saved on the way. Start may
// be called again afterwards.
func (b *Broker) Stop(ctx context.Context) error {
	b.mu.Lock()
	stop, done := b.stop, b.done
	b.stop, b.done = nil, nil
	b.mu.Unlock()
	if stop == nil {
		return nil
	}
	close(stop)
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("edge/broker: stop: %w", ctx.Err())
	}
}

// Close stops the broker for good. It is safe to call more than once.
func (b *Broker) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	err := b.Stop(ctx)
	b.setState(StateClosed, 0)
	return err
}

// process is one run of mosquitto.
type process struct {
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	running chan struct{} // closed when mosquitto logs that it runs

	mu    sync.Mutex
	lines []string // last log lines
}

const tailLines = 12

func (b *Broker) launch() (*process, error) {
	cmd := exec.Command(b.binary, "-c", b.cfg.confPath())
	cmd.Dir = b.cfg.DataDir
	cmd.SysProcAttr = sysProcAttr()
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("starting %s: %w", b.binary, err)
	}
	pw.Close()
	if err := raiseFileLimit(cmd.Process.Pid); err != nil {
		b.log.Warn("broker: open-file limit not raised", "err", err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{}), running: make(chan struct{})}
	logsDone := make(chan struct{})
	go func() {
		defer close(logsDone)
		p.readLogs(pr, b.log)
	}()
	go func() {
		<-logsDone
		p.waitErr = cmd.Wait()
		pr.Close()
		close(p.exited)
	}()
	return p, nil
}

func (p *process) readLogs(r io.Reader, log *slog.Logger) {
	sc := bufio.NewScanner(r)
	signalled := false
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		p.lines = append(p.lines, line)
		if len(p.lines) > tailLines {
			p.lines = p.lines[1:]
		}
		p.mu.Unlock()
		switch {
		case strings.HasPrefix(line, "Error:"):
			log.Error(line, "pid", p.cmd.Process.Pid)
		case strings.HasPrefix(line, "Warning:"):
			log.Warn(line, "pid", p.cmd.Process.Pid)
		default:
			log.Info(line, "pid", p.cmd.Process.Pid)
		}
		if !signalled && strings.Contains(line, " running") && strings.HasPrefix(line, "mosquitto version") {
			signalled = true
			close(p.running)
		}
	}
}

func (p *process) tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, " | ")
}

// waitReady waits for mosquitto to log that it runs and for every listener
// to accept a TCP connection.
// waitReady waits for Mosquitto's "running" log line, which it writes
// once every listener is open (a listener it cannot open makes it exit).
// It does not dial the listeners to check: Mosquitto 2.0 counts a
// connection that closes against the listener's max_connections twice
// (eclipse-mosquitto/mosquitto#1460), so every probe would loosen the
// bound by one.
func (p *process) waitReady(stop <-chan struct{}, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	fail := func(why string) error {
		return fmt.Errorf("edge/broker: %w: %s; last log lines: %s", ErrNotReady, why, p.tail())
	}
	select {
	case <-p.running:
		return nil
	case <-p.exited:
		return fail(fmt.Sprintf("mosquitto exited while starting (%v)", p.waitErr))
	case <-deadline.C:
		return fail(fmt.Sprintf("no 'running' log line within %v", timeout))
	case <-stop:
		return fail("stopped while starting")
	}
}

func (p *process) kill() { _ = p.cmd.Process.Signal(syscall.SIGKILL) }

// terminate asks mosquitto to stop (it saves its database), then kills it
// after grace.
func (p *process) terminate(grace time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		p.kill()
		<-p.exited
	}
}
