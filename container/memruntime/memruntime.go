// Package memruntime is an in-memory container.Runtime: containers are
// goroutines that play the test program's modes, so that the Manager's
// tests run in milliseconds. It passes container/containertest like the
// podman backend; it is a second implementation, not a stand-in for one.
//
// A container's behaviour comes from its environment, as the test image's
// does: EDGEKIT_TEST_MODE "serve" (the default: run until stopped),
// "exit" (exit with EDGEKIT_TEST_CODE after EDGEKIT_TEST_AFTER), or
// "ignore-term" (SIGTERM does nothing; only the kill after the grace ends
// it, with 137). Every container prints "started" to its log. A running
// container holds the host ports its Spec publishes, as podman does, so a
// port already taken fails its start.
package memruntime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/internal/drain"
)

// Runtime is the in-memory runtime; the zero value is not usable: use New.
type Runtime struct {
	mu         sync.Mutex
	images     map[string]bool
	registry   map[string]Credentials // images a pull can fetch
	containers map[string]*ctr
	seq        int
	subs       map[*sub]bool
	programs   sync.WaitGroup // one per running container; Close waits
}

// Credentials guard an image in the simulated registry; empty: none.
type Credentials struct{ Username, Password string }

type ctr struct {
	info    container.Container
	spec    container.Spec
	log     bytes.Buffer
	signals chan string // to the running program
	exited  chan struct{}
	ports   []io.Closer // the host ports it holds while running
}

type sub struct {
	labels map[string]string
	ch     chan container.Event
}

// New returns an empty runtime whose simulated registry holds registry.
func New(registry map[string]Credentials) *Runtime {
	return &Runtime{images: map[string]bool{}, registry: maps.Clone(registry), containers: map[string]*ctr{}, subs: map[*sub]bool{}}
}

// Info names the runtime.
func (r *Runtime) Info(context.Context) (container.Info, error) {
	return container.Info{Name: "memruntime", Version: "1", Capabilities: container.Capabilities{Pull: true, Exec: true, Stats: true, Events: true}}, nil
}

// PullImage fetches an image from the simulated registry.
func (r *Runtime) PullImage(_ context.Context, ref string, opts *container.PullOptions) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cred, ok := r.registry[ref]
	if !ok {
		return fmt.Errorf("memruntime: pull %s: %w", ref, container.ErrImageNotFound)
	}
	var o container.PullOptions
	if opts != nil {
		o = *opts
	}
	if cred.Username != "" && (o.Username != cred.Username || o.Password != cred.Password) {
		return fmt.Errorf("memruntime: pull %s: %w", ref, container.ErrUnauthorized)
	}
	if o.Progress != nil {
		o.Progress("pulled " + ref)
	}
	r.images[ref] = true
	return nil
}

// ImportImage stores an image from a root filesystem tar.
func (r *Runtime) ImportImage(_ context.Context, ref string, rootfs io.Reader) error {
	if _, err := io.Copy(io.Discard, rootfs); err != nil {
		return fmt.Errorf("memruntime: import %s: %w", ref, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.images[ref] = true
	return nil
}

// ImageExists reports whether ref is stored.
func (r *Runtime) ImageExists(_ context.Context, ref string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.images[ref], nil
}

// ListImages lists the stored images.
func (r *Runtime) ListImages(context.Context) ([]container.Image, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []container.Image
	for _, ref := range slices.Sorted(maps.Keys(r.images)) {
		out = append(out, container.Image{ID: ref, Names: []string{ref}})
	}
	return out, nil
}

// RemoveImage removes an image no container uses.
func (r *Runtime) RemoveImage(_ context.Context, ref string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.images[ref] {
		return fmt.Errorf("memruntime: remove image %s: %w", ref, container.ErrImageNotFound)
	}
	for _, c := range r.containers {
		if c.spec.Image == ref {
			return fmt.Errorf("memruntime: remove image %s: in use by %s", ref, c.info.Name)
		}
	}
	delete(r.images, ref)
	return nil
}

// find returns a container by id or name; r.mu is held.
func (r *Runtime) find(id string) (*ctr, error) {
	if c, ok := r.containers[id]; ok {
		return c, nil
	}
	for _, c := range r.containers {
		if c.info.Name == id {
			return c, nil
		}
	}
	return nil, fmt.Errorf("memruntime: %s: %w", id, container.ErrNotFound)
}

// Create makes a container from spec.
func (r *Runtime) Create(_ context.Context, spec container.Spec) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.images[spec.Image] {
		return "", fmt.Errorf("memruntime: create %s: image %s: %w", spec.Name, spec.Image, container.ErrImageNotFound)
	}
	r.seq++
	id := fmt.Sprintf("%012x", r.seq)
	name := spec.Name
	if name == "" {
		name = "ctr-" + id
	}
	if _, err := r.find(name); err == nil {
		return "", fmt.Errorf("memruntime: create %s: %w", name, container.ErrNameInUse)
	}
	c := &ctr{spec: spec, info: container.Container{ID: id, Name: name, Image: spec.Image, Labels: maps.Clone(spec.Labels), State: container.Created}}
	r.containers[id] = c
	r.emit(c, "create", 0)
	return id, nil
}

// emit tells subscribers; r.mu is held.
func (r *Runtime) emit(c *ctr, action string, code int) {
	ev := container.Event{ID: c.info.ID, Name: c.info.Name, Action: action, Labels: maps.Clone(c.info.Labels), ExitCode: code, Time: time.Now()}
	for s := range r.subs {
		if matches(c.info.Labels, s.labels) {
			select {
			case s.ch <- ev:
			default: // a slow subscriber loses events, as a broken stream would
			}
		}
	}
}

func matches(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// Start runs a created or exited container's program.
func (r *Runtime) Start(_ context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.find(id)
	if err != nil {
		return err
	}
	if c.info.State == container.Running {
		return nil
	}
	ports, err := listen(c.spec.Ports)
	if err != nil {
		return fmt.Errorf("memruntime: start %s: %w", c.info.Name, err)
	}
	c.ports = ports
	c.info.State, c.info.StartedAt, c.info.ExitCode = container.Running, time.Now(), 0
	c.signals, c.exited = make(chan string, 4), make(chan struct{})
	fmt.Fprintf(&c.log, "%s started\n", time.Now().UTC().Format(time.RFC3339Nano))
	r.emit(c, "start", 0)
	r.programs.Add(1)
	go r.run(c, c.signals, c.exited)
	return nil
}

// listen holds the host ports published, as podman does, so that a port
// another process holds fails the start.
func listen(ports []container.Port) ([]io.Closer, error) {
	var held []io.Closer
	for _, p := range ports {
		if p.HostPort == 0 {
			continue
		}
		addr := net.JoinHostPort(p.HostIP, strconv.Itoa(int(p.HostPort)))
		var c io.Closer
		var err error
		if p.Protocol == "udp" {
			c, err = net.ListenPacket("udp", addr)
		} else {
			c, err = net.Listen("tcp", addr)
		}
		if err != nil {
			for _, h := range held {
				h.Close()
			}
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, fmt.Errorf("port %s: %w: %v", addr, container.ErrPortInUse, err)
			}
			return nil, fmt.Errorf("port %s: %w", addr, err)
		}
		held = append(held, c)
	}
	return held, nil
}

// run plays the program until it exits.
func (r *Runtime) run(c *ctr, signals chan string, exited chan struct{}) {
	defer r.programs.Done()
	mode := c.spec.Env["EDGEKIT_TEST_MODE"]
	var after <-chan time.Time
	code := 0
	if mode == "exit" {
		d, _ := time.ParseDuration(c.spec.Env["EDGEKIT_TEST_AFTER"])
		code, _ = strconv.Atoi(c.spec.Env["EDGEKIT_TEST_CODE"])
		after = time.After(d)
	}
	for {
		select {
		case <-after:
			r.exit(c, exited, code)
			return
		case sig := <-signals:
			switch {
			case sig == "SIGKILL" || sig == "KILL":
				r.exit(c, exited, 137)
				return
			case mode == "ignore-term":
			default:
				r.exit(c, exited, 0)
				return
			}
		}
	}
}

func (r *Runtime) exit(c *ctr, exited chan struct{}, code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c.info.State, c.info.ExitCode, c.info.FinishedAt = container.Exited, code, time.Now()
	for _, p := range c.ports {
		p.Close()
	}
	c.ports = nil
	close(exited)
	r.emit(c, "die", code)
}

// Stop signals the container and kills it after grace.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	r.mu.Lock()
	c, err := r.find(id)
	if err != nil {
		r.mu.Unlock()
		return err
	}
	if c.info.State != container.Running {
		r.mu.Unlock()
		return nil
	}
	signals, exited := c.signals, c.exited
	sig := c.spec.StopSignal
	r.mu.Unlock()
	signals <- cmpOr(sig, "SIGTERM")
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-exited:
		return nil
	case <-t.C:
		signals <- "SIGKILL"
	case <-ctx.Done():
		return ctx.Err()
	}
	<-exited
	return nil
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Kill sends a signal.
func (r *Runtime) Kill(_ context.Context, id, signal string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.find(id)
	if err != nil {
		return err
	}
	if c.info.State != container.Running {
		return fmt.Errorf("memruntime: kill %s: %w", id, container.ErrNotRunning)
	}
	c.signals <- cmpOr(signal, "SIGKILL")
	return nil
}

// Remove deletes a container; a running one only with force.
func (r *Runtime) Remove(ctx context.Context, id string, force bool) error {
	r.mu.Lock()
	c, err := r.find(id)
	if err != nil {
		r.mu.Unlock()
		return err
	}
	running, exited := c.info.State == container.Running, c.exited
	r.mu.Unlock()
	if running {
		if !force {
			return fmt.Errorf("memruntime: remove %s: it is running", id)
		}
		if err := r.Kill(ctx, id, "SIGKILL"); err == nil {
			<-exited
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.containers, c.info.ID)
	r.emit(c, "remove", 0)
	return nil
}

// Rename changes a container's name.
func (r *Runtime) Rename(_ context.Context, id, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.find(id)
	if err != nil {
		return err
	}
	if other, err := r.find(name); err == nil && other != c {
		return fmt.Errorf("memruntime: rename %s to %s: %w", id, name, container.ErrNameInUse)
	}
	c.info.Name = name
	return nil
}

// Inspect returns a container's state.
func (r *Runtime) Inspect(_ context.Context, id string) (container.Container, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.find(id)
	if err != nil {
		return container.Container{}, err
	}
	out := c.info
	out.Labels = maps.Clone(c.info.Labels)
	return out, nil
}

// List returns the containers carrying the labels.
func (r *Runtime) List(_ context.Context, labels map[string]string) ([]container.Container, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []container.Container
	for _, c := range r.containers {
		if matches(c.info.Labels, labels) {
			info := c.info
			info.Labels = maps.Clone(c.info.Labels)
			out = append(out, info)
		}
	}
	slices.SortFunc(out, func(a, b container.Container) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Wait waits for running or exited.
func (r *Runtime) Wait(ctx context.Context, id string, cond container.WaitCondition) (int, error) {
	for {
		r.mu.Lock()
		c, err := r.find(id)
		if err != nil {
			r.mu.Unlock()
			return 0, err
		}
		state, code, exited := c.info.State, c.info.ExitCode, c.exited
		r.mu.Unlock()
		switch {
		case cond == container.WaitRunning && state == container.Running:
			return 0, nil
		case cond == container.WaitExited && state == container.Exited:
			return code, nil
		case cond == container.WaitExited && exited != nil && state == container.Running:
			select {
			case <-exited:
				continue
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Exec runs "echo ARGS" and "exit N" in a running container.
func (r *Runtime) Exec(_ context.Context, id string, cmd []string) (container.ExecResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.find(id)
	if err != nil {
		return container.ExecResult{}, err
	}
	if c.info.State != container.Running {
		return container.ExecResult{}, fmt.Errorf("memruntime: exec in %s: %w", id, container.ErrNotRunning)
	}
	switch {
	case len(cmd) > 0 && cmd[0] == "echo":
		return container.ExecResult{Stdout: []byte(strings.Join(cmd[1:], " ") + "\n")}, nil
	case len(cmd) == 2 && cmd[0] == "exit":
		code, _ := strconv.Atoi(cmd[1])
		return container.ExecResult{ExitCode: code}, nil
	default:
		return container.ExecResult{ExitCode: 127, Stderr: []byte("command not found\n")}, nil
	}
}

// Logs writes the container's log.
func (r *Runtime) Logs(ctx context.Context, id string, opts container.LogOptions, w io.Writer) error {
	r.mu.Lock()
	c, err := r.find(id)
	if err != nil {
		r.mu.Unlock()
		return err
	}
	lines := strings.SplitAfter(c.log.String(), "\n")
	r.mu.Unlock()
	if n := len(lines); n > 0 && lines[n-1] == "" {
		lines = lines[:n-1]
	}
	if opts.Tail > 0 && len(lines) > opts.Tail {
		lines = lines[len(lines)-opts.Tail:]
	}
	for _, l := range lines {
		if _, err := io.WriteString(w, l); err != nil {
			return err
		}
	}
	if opts.Follow {
		<-ctx.Done()
	}
	return nil
}

// Stats reports fixed figures for a running container.
func (r *Runtime) Stats(_ context.Context, id string) (container.Stats, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.find(id)
	if err != nil {
		return container.Stats{}, err
	}
	if c.info.State != container.Running {
		return container.Stats{}, fmt.Errorf("memruntime: stats of %s: %w", id, container.ErrNotRunning)
	}
	return container.Stats{MemoryBytes: 1 << 20, MemoryLimit: uint64(c.spec.Resources.MemoryBytes), PIDs: 1}, nil
}

// Events streams events until ctx ends.
func (r *Runtime) Events(ctx context.Context, labels map[string]string) (<-chan container.Event, error) {
	s := &sub{labels: maps.Clone(labels), ch: make(chan container.Event, 256)}
	r.mu.Lock()
	r.subs[s] = true
	r.mu.Unlock()
	out := make(chan container.Event)
	go func() { // ends with ctx, as Events promises
		defer close(out)
		defer func() {
			r.mu.Lock()
			delete(r.subs, s)
			r.mu.Unlock()
		}()
		for {
			select {
			case ev := <-s.ch:
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// Close kills every container and waits for the programs, or for ctx
// (then it says what it left). It is safe to call twice.
func (r *Runtime) Close(ctx context.Context) error {
	r.mu.Lock()
	for _, c := range r.containers {
		if c.info.State == container.Running {
			select {
			case c.signals <- "SIGKILL":
			default: // already told
			}
		}
	}
	r.mu.Unlock()
	if err := drain.Wait(ctx, &r.programs, func() {}); err != nil {
		return fmt.Errorf("memruntime: close: the containers' programs: %w", err)
	}
	return nil
}
