package container

import (
	"context"
	"errors"
	"io"
	"time"
)

// Errors a Runtime returns (wrapped, naming the container or image), mapped
// from the backend's own; callers branch on them with errors.Is.
var (
	ErrNotFound      = errors.New("no such container")
	ErrNameInUse     = errors.New("container name in use")
	ErrImageNotFound = errors.New("image not found")
	ErrUnauthorized  = errors.New("unauthorized")
	ErrNotRunning    = errors.New("container not running")
	ErrUnavailable   = errors.New("container runtime unavailable")
	// ErrClosed is returned by a Manager after Close.
	ErrClosed = errors.New("container manager closed")
	// ErrPortInUse: a host port a Spec publishes is taken by another
	// process (or container); the error names the address.
	ErrPortInUse = errors.New("host port in use")
)

// Mount is a filesystem mounted into a container.
type Mount struct {
	Type     string // bind, volume or tmpfs
	Source   string // host path (bind) or volume name; none for tmpfs
	Target   string // path in the container
	ReadOnly bool
}

// Port publishes a container port on the host.
type Port struct {
	HostIP        string // default all addresses
	HostPort      uint16
	ContainerPort uint16
	Protocol      string // tcp (default) or udp
}

// Resources bound a container.
type Resources struct {
	MemoryBytes int64   // 0: unlimited
	CPUs        float64 // cores' worth of CPU time, 0: unlimited
	PIDs        int64   // 0: unlimited
}

// Spec is how to create a container. Containers get no extra privileges
// unless Privileged says so.
type Spec struct {
	Name         string
	Image        string
	Command      []string
	Env          map[string]string
	Labels       map[string]string
	Mounts       []Mount
	Ports        []Port
	Devices      []string // host device paths
	Resources    Resources
	NetworkMode  string // bridge (default), host or none
	User         string
	WorkingDir   string
	StopSignal   string        // default SIGTERM
	StopGrace    time.Duration // before SIGKILL; default 10 s
	ReadOnlyRoot bool
	Privileged   bool
}

// State is a container's state.
type State string

// States.
const (
	Created State = "created"
	Running State = "running"
	Paused  State = "paused"
	Exited  State = "exited"
)

// Container is what a runtime knows of one container.
type Container struct {
	ID        string
	Name      string
	Image     string
	Labels    map[string]string
	State     State
	ExitCode  int
	OOMKilled bool // as the runtime says; see the Manager for what it adds
	// OOMKills counts the processes the kernel's OOM killer has killed in
	// the running container's cgroup, when the runtime can read it (podman
	// on the same host); 0 otherwise. A container can live on after its
	// children were killed: this is how that is seen.
	OOMKills   uint64
	StartedAt  time.Time
	FinishedAt time.Time
}

// Image is a stored image.
type Image struct {
	ID    string
	Names []string
	Size  int64
}

// Capabilities say what a runtime can do, so that the Manager adapts.
type Capabilities struct {
	Pull   bool // from registries
	Exec   bool
	Stats  bool
	Events bool // without them the Manager polls Inspect
}

// Info describes a runtime.
type Info struct {
	Name         string
	Version      string
	Capabilities Capabilities
}

// PullOptions are a pull's credentials and progress.
type PullOptions struct {
	Username, Password string
	// SkipTLSVerify accepts a registry's unverified certificate, or plain
	// HTTP: a registry on the local network.
	SkipTLSVerify bool
	// Progress receives the runtime's progress lines; nil ignores them.
	Progress func(line string)
}

// WaitCondition is what Wait waits for.
type WaitCondition string

// Wait conditions.
const (
	WaitRunning WaitCondition = "running"
	WaitExited  WaitCondition = "exited"
)

// ExecResult is a command's outcome in a container.
type ExecResult struct {
	ExitCode       int
	Stdout, Stderr []byte
}

// LogOptions select a container's log lines.
type LogOptions struct {
	Follow bool      // until ctx ends
	Since  time.Time // zero: from the start
	Tail   int       // the last n lines; 0: all
}

// Stats are a container's resource use now.
type Stats struct {
	CPU         time.Duration // CPU time used
	MemoryBytes uint64
	MemoryLimit uint64
	PIDs        uint64
}

// Event is something that happened to a container.
type Event struct {
	ID       string
	Name     string
	Action   string // create, start, die, stop, kill, oom, remove, ...
	Labels   map[string]string
	ExitCode int // die
	Time     time.Time
}

// Runtime is what a container backend implements (package
// container/podman is the real one); container/containertest checks an
// implementation. Every call takes a context. Ids or names are accepted
// wherever a container is named.
type Runtime interface {
	Info(ctx context.Context) (Info, error)

	PullImage(ctx context.Context, ref string, opts *PullOptions) error
	ImportImage(ctx context.Context, ref string, rootfs io.Reader) error
	ImageExists(ctx context.Context, ref string) (bool, error)
	ListImages(ctx context.Context) ([]Image, error)
	RemoveImage(ctx context.Context, ref string) error

	Create(ctx context.Context, spec Spec) (id string, err error)
	Start(ctx context.Context, id string) error
	// Stop sends the stop signal, then SIGKILL after grace.
	Stop(ctx context.Context, id string, grace time.Duration) error
	Kill(ctx context.Context, id, signal string) error
	Remove(ctx context.Context, id string, force bool) error
	Rename(ctx context.Context, id, name string) error
	Inspect(ctx context.Context, id string) (Container, error)
	// List returns the containers carrying every label given.
	List(ctx context.Context, labels map[string]string) ([]Container, error)
	// Wait blocks until the container is running, or has exited (then
	// with its exit code).
	Wait(ctx context.Context, id string, cond WaitCondition) (exitCode int, err error)
	Exec(ctx context.Context, id string, cmd []string) (ExecResult, error)
	Logs(ctx context.Context, id string, opts LogOptions, w io.Writer) error
	Stats(ctx context.Context, id string) (Stats, error)
	// Events streams container events carrying the labels given, until ctx
	// ends (then the channel closes) or the runtime's stream breaks (the
	// channel closes early: call again).
	Events(ctx context.Context, labels map[string]string) (<-chan Event, error)
}
