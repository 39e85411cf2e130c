package podman

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containers/podman/v5/libpod/define"
	"github.com/containers/podman/v5/pkg/api/handlers"
	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/images"
	"github.com/containers/podman/v5/pkg/bindings/system"
	"github.com/containers/podman/v5/pkg/domain/entities/types"
	"github.com/containers/podman/v5/pkg/errorhandling"
	"github.com/containers/podman/v5/pkg/specgen"
	dockercontainer "github.com/docker/docker/api/types/container"
	"github.com/opencontainers/runtime-spec/specs-go"
	nettypes "go.podman.io/common/libnetwork/types"

	"github.com/edgekit/edgekit/container"
)

// Runtime is the podman backend. Containers are created with podman's
// restart policy "no": container.Manager supervises them.
type Runtime struct {
	conn context.Context // carries the bindings' connection
	url  string

	// The bindings' ExecStartAndAttach replaces its connection's HTTP
	// transport (for the upgraded stream): on the shared connection that
	// is a data race with every request in flight, and swaps the transport
	// under them. Exec streams go through a connection of their own, one
	// at a time.
	execMu   sync.Mutex
	execConn context.Context
}

var _ container.Runtime = (*Runtime)(nil)

// Connect opens a runtime on a podman service URL, for example
// unix:///run/podman/podman.sock.
func Connect(ctx context.Context, url string) (*Runtime, error) {
	conn, err := bindings.NewConnection(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("podman: connecting to %s: %w: %v", url, container.ErrUnavailable, err)
	}
	return &Runtime{conn: context.WithoutCancel(conn), url: url}, nil
}

// callCtx has ctx's deadline and cancellation and the connection's values.
type callCtx struct {
	context.Context
	conn context.Context
}

func (c callCtx) Value(key any) any {
	if v := c.Context.Value(key); v != nil {
		return v
	}
	return c.conn.Value(key)
}

func (r *Runtime) ctx(ctx context.Context) context.Context {
	return callCtx{Context: ctx, conn: r.conn}
}

// mapErr turns podman's errors into the container package's sentinels,
// naming what was asked.
func mapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	var model *errorhandling.ErrorModel
	code := 0
	if errors.As(err, &model) {
		code = model.ResponseCode
		msg = model.Because + ": " + model.Message
	}
	lower := strings.ToLower(msg)
	var sentinel error
	var netErr *net.OpError
	switch {
	case errors.As(err, &netErr) && netErr.Op == "dial":
		sentinel = container.ErrUnavailable // the service's socket is gone or refuses
	case strings.Contains(lower, "image not known"), strings.Contains(lower, "no such image"), strings.Contains(lower, "manifest unknown"):
		sentinel = container.ErrImageNotFound
	case code == 404, strings.Contains(lower, "no such container"):
		sentinel = container.ErrNotFound
	case strings.Contains(lower, "address already in use"):
		sentinel = container.ErrPortInUse
	case strings.Contains(lower, "already in use"):
		sentinel = container.ErrNameInUse
	case code == 401, strings.Contains(lower, "unauthorized"), strings.Contains(lower, "authentication required"):
		sentinel = container.ErrUnauthorized
	case strings.Contains(lower, "state improper"), strings.Contains(lower, "not running"):
		sentinel = container.ErrNotRunning
	case strings.Contains(lower, "unable to connect"), strings.Contains(lower, "connection refused"):
		sentinel = container.ErrUnavailable
	}
	if sentinel != nil {
		return fmt.Errorf("podman: %s: %w: %s", what, sentinel, msg)
	}
	return fmt.Errorf("podman: %s: %w", what, err)
}

// Info names the service and what it can do.
func (r *Runtime) Info(ctx context.Context) (container.Info, error) {
	v, err := system.Version(r.ctx(ctx), nil)
	if err != nil {
		return container.Info{}, mapErr("version", err)
	}
	version := ""
	if v.Server != nil {
		version = v.Server.Version
	}
	return container.Info{Name: "podman", Version: version,
		Capabilities: container.Capabilities{Pull: true, Exec: true, Stats: true, Events: true}}, nil
}

// PullImage pulls ref (only when missing), with credentials.
func (r *Runtime) PullImage(ctx context.Context, ref string, opts *container.PullOptions) error {
	o := new(images.PullOptions).WithPolicy("missing")
	if opts != nil {
		if opts.Username != "" {
			o = o.WithUsername(opts.Username).WithPassword(opts.Password)
		}
		if opts.SkipTLSVerify {
			o = o.WithSkipTLSVerify(true)
		}
		if opts.Progress != nil {
			o = o.WithProgressWriter(lineWriter(opts.Progress))
		} else {
			o = o.WithQuiet(true)
		}
	} else {
		o = o.WithQuiet(true)
	}
	_, err := images.Pull(r.ctx(ctx), ref, o)
	return mapErr("pull "+ref, err)
}

// lineWriter hands each line written to f.
type lineWriter func(string)

func (f lineWriter) Write(p []byte) (int, error) {
	for line := range strings.SplitSeq(strings.TrimRight(string(p), "\n"), "\n") {
		if line != "" {
			f(line)
		}
	}
	return len(p), nil
}

// ImportImage stores a root filesystem tar as ref; its entrypoint is
// /testprog-style: the tar's "entrypoint" is not guessed, so the caller's
// Spec.Command names the program unless the tar holds /entrypoint.
func (r *Runtime) ImportImage(ctx context.Context, ref string, rootfs io.Reader) error {
	_, err := images.Import(r.ctx(ctx), rootfs, new(images.ImportOptions).WithReference(ref))
	return mapErr("import "+ref, err)
}

// ImageExists reports whether ref is stored.
func (r *Runtime) ImageExists(ctx context.Context, ref string) (bool, error) {
	ok, err := images.Exists(r.ctx(ctx), ref, nil)
	return ok, mapErr("image exists "+ref, err)
}

// ListImages lists the stored images.
func (r *Runtime) ListImages(ctx context.Context) ([]container.Image, error) {
	list, err := images.List(r.ctx(ctx), nil)
	if err != nil {
		return nil, mapErr("list images", err)
	}
	out := make([]container.Image, 0, len(list))
	for _, i := range list {
		out = append(out, container.Image{ID: i.ID, Names: i.Names, Size: i.Size})
	}
	return out, nil
}

// RemoveImage removes an image.
func (r *Runtime) RemoveImage(ctx context.Context, ref string) error {
	_, errs := images.Remove(r.ctx(ctx), []string{ref}, nil)
	return mapErr("remove image "+ref, errors.Join(errs...))
}

// Create makes a container from spec, with podman's restart policy "no".
func (r *Runtime) Create(ctx context.Context, spec container.Spec) (string, error) {
	s := specgen.NewSpecGenerator(spec.Image, false)
	s.Name = spec.Name
	s.Command = spec.Command
	s.Env = maps.Clone(spec.Env)
	s.Labels = maps.Clone(spec.Labels)
	s.WorkDir = spec.WorkingDir
	s.User = spec.User
	s.RestartPolicy = "no"
	privileged, noNewPrivs, readOnly := spec.Privileged, !spec.Privileged, spec.ReadOnlyRoot
	s.Privileged, s.NoNewPrivileges, s.ReadOnlyFilesystem = &privileged, &noNewPrivs, &readOnly
	if spec.StopSignal != "" {
		sig, err := parseSignal(spec.StopSignal)
		if err != nil {
			return "", fmt.Errorf("podman: create %s: stop signal: %w", spec.Name, err)
		}
		s.StopSignal = &sig
	}
	grace := uint(10)
	if spec.StopGrace > 0 {
		grace = uint(max(1, spec.StopGrace/time.Second))
	}
	s.StopTimeout = &grace
	switch spec.NetworkMode {
	case "", "bridge":
		s.NetNS = specgen.Namespace{NSMode: specgen.Bridge}
	case "host":
		s.NetNS = specgen.Namespace{NSMode: specgen.Host}
	case "none":
		s.NetNS = specgen.Namespace{NSMode: specgen.NoNetwork}
	default:
		return "", fmt.Errorf("podman: create %s: network mode %q, want bridge, host or none", spec.Name, spec.NetworkMode)
	}
	for _, p := range spec.Ports {
		s.PortMappings = append(s.PortMappings, nettypes.PortMapping{HostIP: p.HostIP, HostPort: p.HostPort, ContainerPort: p.ContainerPort, Protocol: cmpOr(p.Protocol, "tcp")})
	}
	for _, m := range spec.Mounts {
		switch m.Type {
		case "bind", "tmpfs":
			opts := []string{"rw"}
			if m.ReadOnly {
				opts = []string{"ro"}
			}
			if m.Type == "bind" {
				opts = append(opts, "rbind")
			}
			s.Mounts = append(s.Mounts, specs.Mount{Type: m.Type, Source: m.Source, Destination: m.Target, Options: opts})
		case "volume":
			var opts []string
			if m.ReadOnly {
				opts = []string{"ro"}
			}
			s.Volumes = append(s.Volumes, &specgen.NamedVolume{Name: m.Source, Dest: m.Target, Options: opts})
		default:
			return "", fmt.Errorf("podman: create %s: mount type %q, want bind, volume or tmpfs", spec.Name, m.Type)
		}
	}
	for _, d := range spec.Devices {
		s.Devices = append(s.Devices, specs.LinuxDevice{Path: d})
	}
	if res := spec.Resources; res != (container.Resources{}) {
		s.ResourceLimits = &specs.LinuxResources{}
		if res.MemoryBytes > 0 {
			s.ResourceLimits.Memory = &specs.LinuxMemory{Limit: &res.MemoryBytes}
		}
		if res.CPUs > 0 {
			period := uint64(100000)
			quota := int64(res.CPUs * float64(period))
			s.ResourceLimits.CPU = &specs.LinuxCPU{Period: &period, Quota: &quota}
		}
		if res.PIDs > 0 {
			s.ResourceLimits.Pids = &specs.LinuxPids{Limit: res.PIDs}
		}
	}
	resp, err := containers.CreateWithSpec(r.ctx(ctx), s, nil)
	if err != nil {
		return "", mapErr("create "+spec.Name+" from image "+spec.Image, err)
	}
	return resp.ID, nil
}

func parseSignal(name string) (syscall.Signal, error) {
	name = strings.TrimPrefix(strings.ToUpper(name), "SIG")
	for sig, n := range map[syscall.Signal]string{syscall.SIGTERM: "TERM", syscall.SIGINT: "INT", syscall.SIGQUIT: "QUIT", syscall.SIGHUP: "HUP", syscall.SIGUSR1: "USR1", syscall.SIGUSR2: "USR2", syscall.SIGKILL: "KILL"} {
		if n == name {
			return sig, nil
		}
	}
	if n, err := strconv.Atoi(name); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	return 0, fmt.Errorf("%q is not a signal", name)
}

// short is a container id as podman prints it (12 characters), for
// errors; a name is left as it is.
func short(id string) string {
	if len(id) == 64 && strings.Trim(id, "0123456789abcdef") == "" {
		return id[:12]
	}
	return id
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Start starts a container.
func (r *Runtime) Start(ctx context.Context, id string) error {
	return mapErr("start "+short(id), containers.Start(r.ctx(ctx), id, nil))
}

// Stop sends the stop signal and kills after grace.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	secs := uint(max(0, (grace+time.Second-1)/time.Second))
	return mapErr("stop "+short(id), containers.Stop(r.ctx(ctx), id, new(containers.StopOptions).WithTimeout(secs)))
}

// Kill sends a signal.
func (r *Runtime) Kill(ctx context.Context, id, signal string) error {
	err := containers.Kill(r.ctx(ctx), id, new(containers.KillOptions).WithSignal(cmpOr(signal, "SIGKILL")))
	if err != nil && strings.Contains(strings.ToLower(err.Error()), "can only kill running containers") {
		return fmt.Errorf("podman: kill %s: %w", short(id), container.ErrNotRunning)
	}
	return mapErr("kill "+short(id), err)
}

// Remove removes a container; force removes a running one.
func (r *Runtime) Remove(ctx context.Context, id string, force bool) error {
	opts := new(containers.RemoveOptions).WithForce(force)
	if force {
		opts = opts.WithTimeout(0)
	}
	reports, err := containers.Remove(r.ctx(ctx), id, opts)
	if err == nil {
		for _, rep := range reports {
			if rep.Err != nil {
				err = rep.Err
			}
		}
	}
	return mapErr("remove "+short(id), err)
}

// Rename renames a container.
func (r *Runtime) Rename(ctx context.Context, id, name string) error {
	return mapErr("rename "+short(id), containers.Rename(r.ctx(ctx), id, new(containers.RenameOptions).WithName(name)))
}

// Inspect returns a container's state.
func (r *Runtime) Inspect(ctx context.Context, id string) (container.Container, error) {
	data, err := containers.Inspect(r.ctx(ctx), id, nil)
	if err != nil {
		return container.Container{}, mapErr("inspect "+short(id), err)
	}
	c := container.Container{ID: data.ID, Name: data.Name, Image: data.ImageName}
	if data.Config != nil {
		c.Labels = data.Config.Labels
	}
	if st := data.State; st != nil {
		c.State = state(st.Status)
		c.ExitCode = int(st.ExitCode)
		c.OOMKilled = st.OOMKilled
		c.StartedAt, c.FinishedAt = st.StartedAt, st.FinishedAt
		if c.State == container.Running {
			c.OOMKills, _ = oomKills(cgroupRoot, st.CgroupPath)
		}
	}
	return c, nil
}

func state(s string) container.State {
	switch s {
	case "running":
		return container.Running
	case "paused":
		return container.Paused
	case "created", "configured", "initialized":
		return container.Created
	default:
		return container.Exited
	}
}

// List returns the containers carrying every label given.
func (r *Runtime) List(ctx context.Context, labels map[string]string) ([]container.Container, error) {
	var filter []string
	for k, v := range labels {
		filter = append(filter, k+"="+v)
	}
	opts := new(containers.ListOptions).WithAll(true)
	if len(filter) > 0 {
		opts = opts.WithFilters(map[string][]string{"label": filter})
	}
	list, err := containers.List(r.ctx(ctx), opts)
	if err != nil {
		return nil, mapErr("list", err)
	}
	out := make([]container.Container, 0, len(list))
	for _, l := range list {
		c := container.Container{ID: l.ID, Image: l.Image, Labels: l.Labels, State: state(l.State), ExitCode: int(l.ExitCode)}
		if len(l.Names) > 0 {
			c.Name = l.Names[0]
		}
		c.StartedAt = time.Unix(l.StartedAt, 0)
		out = append(out, c)
	}
	return out, nil
}

// Wait waits for running, or for the exit (then with the exit code).
func (r *Runtime) Wait(ctx context.Context, id string, cond container.WaitCondition) (int, error) {
	conds := []define.ContainerStatus{define.ContainerStateRunning}
	if cond == container.WaitExited {
		conds = []define.ContainerStatus{define.ContainerStateExited, define.ContainerStateStopped}
	}
	code, err := containers.Wait(r.ctx(ctx), id, new(containers.WaitOptions).WithCondition(conds))
	if err != nil {
		return 0, mapErr("wait "+short(id), err)
	}
	if cond == container.WaitRunning {
		return 0, nil
	}
	return int(code), nil
}

// Exec runs cmd in a running container and collects its output.
func (r *Runtime) Exec(ctx context.Context, id string, cmd []string) (container.ExecResult, error) {
	c := r.ctx(ctx)
	session, err := containers.ExecCreate(c, id, &handlers.ExecCreateConfig{ExecOptions: dockercontainer.ExecOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true}})
	if err != nil {
		return container.ExecResult{}, mapErr("exec in "+short(id), err)
	}
	var stdout, stderr bytes.Buffer
	opts := new(containers.ExecStartAndAttachOptions).WithOutputStream(&stdout).WithErrorStream(&stderr).WithAttachOutput(true).WithAttachError(true)
	if err := r.execAttach(ctx, session, opts); err != nil {
		return container.ExecResult{}, mapErr("exec in "+short(id), err)
	}
	info, err := containers.ExecInspect(c, session, nil)
	if err != nil {
		return container.ExecResult{}, mapErr("exec in "+short(id), err)
	}
	_ = containers.ExecRemove(c, session, nil)
	return container.ExecResult{ExitCode: info.ExitCode, Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}, nil
}

// execAttach starts an exec session and streams it, on the exec
// connection (see Runtime.execMu).
func (r *Runtime) execAttach(ctx context.Context, session string, opts *containers.ExecStartAndAttachOptions) error {
	r.execMu.Lock()
	defer r.execMu.Unlock()
	if r.execConn == nil {
		conn, err := bindings.NewConnection(ctx, r.url)
		if err != nil {
			return fmt.Errorf("%w: %v", container.ErrUnavailable, err)
		}
		r.execConn = context.WithoutCancel(conn)
	}
	return containers.ExecStartAndAttach(callCtx{Context: ctx, conn: r.execConn}, session, opts)
}

// Logs writes a container's log lines to w.
func (r *Runtime) Logs(ctx context.Context, id string, opts container.LogOptions, w io.Writer) error {
	o := new(containers.LogOptions).WithStdout(true).WithStderr(true).WithFollow(opts.Follow)
	if !opts.Since.IsZero() {
		o = o.WithSince(opts.Since.Format(time.RFC3339Nano))
	}
	if opts.Tail > 0 {
		o = o.WithTail(strconv.Itoa(opts.Tail))
	}
	lines := make(chan string, 64)
	done := make(chan error, 1)
	c := r.ctx(ctx)
	go func() {
		done <- containers.Logs(c, id, o, lines, lines)
		close(lines)
	}()
	for line := range lines {
		if _, err := io.WriteString(w, strings.TrimRight(line, "\n")+"\n"); err != nil {
			return err
		}
	}
	err := <-done
	if opts.Follow && ctx.Err() != nil {
		return nil
	}
	return mapErr("logs of "+short(id), err)
}

// Stats reads a container's resource use once.
func (r *Runtime) Stats(ctx context.Context, id string) (container.Stats, error) {
	ch, err := containers.Stats(r.ctx(ctx), []string{id}, new(containers.StatsOptions).WithStream(false))
	if err != nil {
		return container.Stats{}, mapErr("stats of "+short(id), err)
	}
	for report := range ch {
		if report.Error != nil {
			return container.Stats{}, mapErr("stats of "+short(id), report.Error)
		}
		for _, s := range report.Stats {
			return container.Stats{CPU: time.Duration(s.CPUNano), MemoryBytes: s.MemUsage, MemoryLimit: s.MemLimit, PIDs: s.PIDs}, nil
		}
	}
	return container.Stats{}, fmt.Errorf("podman: stats of %s: %w", short(id), container.ErrNotRunning)
}

// Events streams container events carrying the labels, until ctx ends or
// the service's stream breaks.
func (r *Runtime) Events(ctx context.Context, labels map[string]string) (<-chan container.Event, error) {
	filters := map[string][]string{"type": {"container"}}
	for k, v := range labels {
		filters["label"] = append(filters["label"], k+"="+v)
	}
	// system.Events returns once the stream is open and streams into raw
	// (closed at the stream's end) until cancel closes the response body;
	// when the request fails it returns the error and never closes raw.
	raw := make(chan types.Event, 64)
	cancel := make(chan bool, 1)
	failed := make(chan struct{})
	var failure error
	done := make(chan struct{}) // the stream is over for us
	out := make(chan container.Event, 64)
	go func() {
		if err := system.Events(r.ctx(context.WithoutCancel(ctx)), raw, cancel, new(system.EventsOptions).WithFilters(filters).WithStream(true)); err != nil {
			failure = err
			close(failed)
		}
	}()
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
		}
		cancel <- true // closes the response body (capacity 1: never blocks)
	}()
	go func() {
		defer close(done)
		defer close(out)
		for {
			var ev types.Event
			ok := false
			select {
			case ev, ok = <-raw:
			case <-failed:
			}
			if !ok {
				return
			}
			select {
			case out <- event(ev):
			case <-ctx.Done():
				for range raw { // until the body is closed: never stuck sending
				}
				return
			}
		}
	}()
	select {
	case <-failed:
		return nil, mapErr("events", failure)
	case <-time.After(50 * time.Millisecond): // streaming
	}
	return out, nil
}

// event is podman's event as the container package names it.
func event(ev types.Event) container.Event {
	code, _ := strconv.Atoi(ev.Actor.Attributes["containerExitCode"])
	action := string(ev.Action)
	if action == "died" {
		action = "die"
	}
	return container.Event{ID: ev.Actor.ID, Name: ev.Actor.Attributes["name"], Action: action,
		Labels: ev.Actor.Attributes, ExitCode: code, Time: time.Unix(0, ev.TimeNano)}
}
