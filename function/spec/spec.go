// Package spec defines a function version as deployments carry it and
// package manifests hold it: its runtime, handler, protocol, run mode,
// limits, environment and configuration, with the rules and defaults that
// make it complete (Function.Resolve). It has no dependency beyond the
// standard library and builds on every OS, so that tools which build, check
// and sign packages (package codepkg) run where vendors work; the function
// host (package function) names these types through aliases.
package spec

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"
)

// Runtime is how a function's code runs.
type Runtime string

// Runtimes. RuntimeGo runs a handler registered with the host, in process;
// the others run out of process.
const (
	RuntimeGo         Runtime = "go"
	RuntimeExecutable Runtime = "executable" // a binary speaking the Lambda or FC runtime API
	RuntimeNode       Runtime = "nodejs"
	RuntimePython     Runtime = "python"
)

// API names the runtime API an out-of-process function speaks.
type API string

// Runtime APIs.
const (
	// APILambda is the AWS Lambda Runtime API 2018-06-01
	// (AWS_LAMBDA_RUNTIME_API), spoken by aws-lambda-go and every Lambda
	// custom runtime.
	APILambda API = "lambda"
	// APIFC is the Alibaba Function Compute runtime API 2020-11-11
	// (FC_RUNTIME_API), spoken by fc-runtime-go-sdk.
	APIFC API = "fc"
	// APINative is edgekit's framed protocol over pipes (package
	// function/native), several times cheaper per invocation: Go functions
	// built with native.Start, and the Node.js and Python bootstraps.
	APINative API = "native"
)

// Service names the cloud function service a function was written for.
// The host gives the function what that service gives it: its event shape,
// its context object, its environment and, for an executable, its runtime
// API (docs/CLOUD.md lists them member by member).
type Service string

// Services.
const (
	// ServiceLambda is AWS Lambda: a JSON event parsed for the handler,
	// Lambda's context, AWS_* and LAMBDA_* variables.
	ServiceLambda Service = "lambda"
	// ServiceFC is Alibaba Function Compute: the event as bytes (a Buffer
	// in Node.js), FC's context (requestId, credentials, function,
	// service, region, accountId), FC_* variables.
	ServiceFC Service = "fc"
)

// Mode is when a function's instances run.
type Mode string

// Run modes.
const (
	// OnDemand starts an instance on the first event and stops it after
	// IdleTimeout without work.
	OnDemand Mode = "on-demand"
	// Continuous starts MinInstances at deploy and keeps them alive.
	Continuous Mode = "continuous"
)

// The defaults, chosen for gateways rather than copied from the cloud:
//
//   - Timeout 10 s (Greengrass: 3 s). Functions at the edge talk to field
//     devices; a Modbus read with retries over a slow serial line takes
//     seconds, and a 3 s limit turns slow devices into function errors.
//   - IdleTimeout 60 s (as Greengrass): an on-demand instance outlives a
//     burst of events but does not hold memory for minutes.
//   - MaxInstances 4 (Greengrass: 100). Gateways have one to four cores and
//     a few hundred MB; 100 instances of a 30 MB runtime do not fit.
//   - QueueSize 100 (Greengrass: 1,000). The queue holds payloads in
//     memory; 100 waiting events at 4 instances is already 25 invocations'
//     worth of latency, and a full queue tells the caller at once.
//   - MemoryLimitMB 128 for out-of-process instances (Greengrass: 16 MB,
//     too small for Node.js or Python to start).
//   - MaxProcesses 256 processes and threads per out-of-process instance
//     (Lambda: 1,024). Node.js runs about 11 threads, a Go function a few
//     per core; 256 leaves room for helper processes and stops a fork
//     bomb long before it hurts the gateway.
const (
	DefaultTimeout       = 10 * time.Second
	DefaultIdleTimeout   = 60 * time.Second
	DefaultMaxInstances  = 4
	DefaultQueueSize     = 100
	DefaultMemoryLimitMB = 128
	DefaultMaxProcesses  = 256
)

// Function is one version of one function: what deployments carry and
// manifests hold. Zero values mean the defaults above.
type Function struct {
	// Name identifies the function: letters, digits, '-', '_' and '.',
	// starting with a letter or digit, at most 64 characters.
	Name string `json:"name"`
	// Version labels the code ("1.4.2", "2024-06-01+build.7", a commit
	// hash): 1-64 letters, digits, '.', '_', '+' or '-'.
	Version string  `json:"version"`
	Runtime Runtime `json:"runtime"`
	// Handler names the code to run: for RuntimeGo the name the handler was
	// registered under; for the others the entry point in the code
	// directory.
	Handler string `json:"handler"`
	// Service is the cloud service the code was written for: "lambda"
	// (the default) or "fc" (the default when API is "fc").
	Service Service `json:"service,omitempty"`
	// API is the protocol between host and function: the service's own
	// runtime API ("lambda" or "fc", the default for executables) or
	// "native" (the default for Node.js and Python, which speak either).
	API API `json:"api,omitempty"`
	// CodeDir holds an out-of-process function's code; the package store
	// sets it when it unpacks a version.
	CodeDir string `json:"codeDir,omitempty"`
	Mode    Mode   `json:"mode,omitempty"`
	// MinInstances run at all times in Continuous mode (default 1); in
	// OnDemand mode it must be 0.
	MinInstances int `json:"minInstances,omitempty"`
	// MaxInstances bounds concurrent invocations.
	MaxInstances int `json:"maxInstances,omitempty"`
	// QueueSize bounds invocations waiting for an instance.
	QueueSize int `json:"queueSize,omitempty"`
	// Timeout bounds one invocation.
	Timeout Duration `json:"timeout,omitempty"`
	// IdleTimeout stops an idle OnDemand instance.
	IdleTimeout Duration `json:"idleTimeout,omitempty"`
	// MemoryLimitMB limits an out-of-process instance.
	MemoryLimitMB int `json:"memoryLimitMB,omitempty"`
	// MaxProcesses bounds the processes and threads of an out-of-process
	// instance, its children's included (a pids cgroup; see
	// Status.ProcessLimit for what holds it here).
	MaxProcesses int `json:"maxProcesses,omitempty"`
	// User, when set, runs an out-of-process instance as that uid and gid
	// (the host must be allowed to switch: root or CAP_SETUID/CAP_SETGID),
	// and the code directory must be readable by it.
	User *User `json:"user,omitempty"`
	// Env is added to an out-of-process instance's environment. It may
	// not set what the host sets (the runtime API address, the function's
	// name, handler and code directory, EDGEKIT_*).
	Env map[string]string `json:"env,omitempty"`
	// Config is a document the function reads (function.Invocation's
	// Config in process; a file and variable out of process).
	Config json.RawMessage `json:"config,omitempty"`
	// Permissions is what the function may reach through the gateway's
	// API (package fnapi); what it does not list is refused.
	Permissions Permissions `json:"permissions,omitzero"`
}

// Permissions lists what a function may reach through the gateway's API
// beyond its own: the gateway refuses everything else, naming what was
// asked.
type Permissions struct {
	// Publish lists the MQTT topic filters the function may publish on
	// besides its own prefix, outputs/{name}/#, which it always may. The
	// gateway's own topics (edgekit/#, $-topics) and the devices' reports
	// (devices/+/properties, devices/+/state, devices/+/events/#) are
	// refused whatever is listed: only a device's driver reports it.
	Publish []string `json:"publish,omitempty"`
	// Devices lists the devices the function may read, write, call and
	// list: names, or patterns as path.Match reads them ("boiler-*", "*").
	Devices []string `json:"devices,omitempty"`
	// Invoke lists the functions it may invoke: names or patterns.
	Invoke []string `json:"invoke,omitempty"`
}

// User is a numeric uid and gid.
type User struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

// Duration is a time.Duration that reads and writes JSON as "10s".
type Duration time.Duration

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a Go duration string such as "1m30s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"10s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ErrInvalid means a Function breaks a rule; the message names the field.
var ErrInvalid = errors.New("invalid function spec")

var (
	nameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)
)

// ValidName reports whether s may name a function: 1-64 letters, digits,
// '.', '_' or '-', starting with a letter or digit.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// ValidVersion reports whether s may label a version: 1-64 letters,
// digits, '.', '_', '+' or '-', starting with a letter or digit.
func ValidVersion(s string) bool { return versionRE.MatchString(s) }

// Resolve returns a copy of s with the defaults filled in, or an error
// wrapping ErrInvalid that names the first field that is wrong.
func (s Function) Resolve() (Function, error) {
	bad := func(field, format string, args ...any) (Function, error) {
		return Function{}, fmt.Errorf("%w %q: %s: %s", ErrInvalid, s.Name, field, fmt.Sprintf(format, args...))
	}
	if !ValidName(s.Name) {
		return bad("name", "%q must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", s.Name)
	}
	if !ValidVersion(s.Version) {
		return bad("version", "%q must be 1-64 letters, digits, '.', '_', '+' or '-', starting with a letter or digit", s.Version)
	}
	switch s.Runtime {
	case RuntimeGo, RuntimeExecutable, RuntimeNode, RuntimePython:
	case "":
		return bad("runtime", "empty (want go, executable, nodejs or python)")
	default:
		return bad("runtime", "%q (want go, executable, nodejs or python)", s.Runtime)
	}
	if s.Handler == "" {
		return bad("handler", "empty")
	}
	switch s.Service {
	case "":
		s.Service = ServiceLambda
		if s.API == APIFC {
			s.Service = ServiceFC
		}
	case ServiceLambda, ServiceFC:
	default:
		return bad("service", "%q (want lambda or fc)", s.Service)
	}
	if s.Runtime != RuntimeGo {
		own := APILambda
		if s.Service == ServiceFC {
			own = APIFC
		}
		switch s.API {
		case "":
			// Executables are usually builds of the service's runtime
			// client; the bootstraps take the faster native protocol.
			s.API = own
			if s.Runtime != RuntimeExecutable {
				s.API = APINative
			}
		case APILambda, APIFC, APINative:
		default:
			return bad("api", "%q (want lambda, fc or native)", s.API)
		}
		if s.API != APINative && s.API != own {
			return bad("api", "%s is not the runtime API of service %s (use %s or native)", s.API, s.Service, own)
		}
		if s.CodeDir == "" {
			return bad("codeDir", "empty; an out-of-process function needs its code directory")
		}
	}
	switch s.Mode {
	case "":
		s.Mode = OnDemand
	case OnDemand, Continuous:
	default:
		return bad("mode", "%q (want on-demand or continuous)", s.Mode)
	}
	if s.MaxInstances < 0 || s.MinInstances < 0 || s.QueueSize < 0 || s.Timeout < 0 || s.IdleTimeout < 0 || s.MemoryLimitMB < 0 || s.MaxProcesses < 0 {
		return bad("limits", "negative value")
	}
	if s.MaxInstances == 0 {
		s.MaxInstances = DefaultMaxInstances
	}
	if s.Mode == Continuous && s.MinInstances == 0 {
		s.MinInstances = 1
	}
	if s.Mode == OnDemand && s.MinInstances != 0 {
		return bad("minInstances", "%d; an on-demand function keeps no instances (use mode continuous)", s.MinInstances)
	}
	if s.MinInstances > s.MaxInstances {
		return bad("minInstances", "%d above maxInstances %d", s.MinInstances, s.MaxInstances)
	}
	if s.QueueSize == 0 {
		s.QueueSize = DefaultQueueSize
	}
	if s.Timeout == 0 {
		s.Timeout = Duration(DefaultTimeout)
	}
	if s.IdleTimeout == 0 {
		s.IdleTimeout = Duration(DefaultIdleTimeout)
	}
	if s.MemoryLimitMB == 0 {
		s.MemoryLimitMB = DefaultMemoryLimitMB
	}
	if s.MaxProcesses == 0 {
		s.MaxProcesses = DefaultMaxProcesses
	}
	if s.User != nil && s.Runtime == RuntimeGo {
		return bad("user", "an in-process function runs as the host; user applies to out-of-process runtimes")
	}
	for k := range s.Env {
		if hostEnv(k) {
			return bad("env."+k, "set by the host")
		}
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(s.Env[k], 0) {
			return bad("env", "%q is not a variable name, or its value holds NUL", k)
		}
	}
	if len(s.Config) > 0 && !json.Valid(s.Config) {
		return bad("config", "not valid JSON")
	}
	if err := s.Permissions.check(); err != nil {
		return bad("permissions", "%v", err)
	}
	return s, nil
}

// hostEnv reports whether the function host sets the variable k for an
// out-of-process instance, so a spec may not: the variables Lambda
// reserves, everything FC reserves (FC_*), and EDGEKIT_*. The defaults it
// sets that a function may change (AWS_REGION, AWS_DEFAULT_REGION, TZ)
// are not among them.
func hostEnv(k string) bool {
	switch k {
	case "AWS_LAMBDA_RUNTIME_API", "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
		"AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_EXECUTION_ENV", "_HANDLER", "_X_AMZN_TRACE_ID",
		"LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR":
		return true
	}
	return strings.HasPrefix(k, "EDGEKIT_") || strings.HasPrefix(k, "FC_")
}

// check refuses patterns that cannot match as written. The topic
// filters' MQTT syntax is the gateway's to check (it knows the bus).
func (p Permissions) check() error {
	for i, f := range p.Publish {
		if f == "" || strings.ContainsRune(f, 0) {
			return fmt.Errorf("publish[%d]: %q is not a topic filter", i, f)
		}
	}
	for _, l := range []struct {
		field string
		pats  []string
	}{{"devices", p.Devices}, {"invoke", p.Invoke}} {
		for i, pat := range l.pats {
			if _, err := path.Match(pat, ""); err != nil || pat == "" {
				return fmt.Errorf("%s[%d]: %q is not a name or pattern", l.field, i, pat)
			}
		}
	}
	return nil
}

// Allows reports whether one of pats (names or path.Match patterns, as
// Permissions holds them) matches name.
func Allows(pats []string, name string) bool {
	for _, p := range pats {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}
