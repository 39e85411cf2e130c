// Package app is edgekit's application model as plain types: App, Version,
// configuration, Deployment and Status, and the rules that check them. It
// is the wire format between the central side and a gateway (their JSON
// shapes are written down in docs/DEPLOYMENTS.md), so it depends on the
// standard library and edgekit's function/spec only: the fleet imports it
// without the function host, the container manager or any backend.
//
// An application is function code or a container image. A Version of it is
// immutable once published: for a function, the code package (where to
// fetch it, its size, SHA-256 and optional ed25519 signature) and the
// triggers that start it; for a container, the image reference (with its
// digest when known), the container's spec, health probe, restart policy
// and start order. Both carry a default configuration document and,
// optionally, a JSON Schema for it. A Deployment is the desired set of
// (app, version, configuration) for one gateway, with an id and a revision
// that only grows; a Status is what the gateway reports of it.
//
// ParseDeployment reads a deployment document, refusing what it does not
// know (an unknown field, a newer schema) and checking every rule with
// Deployment.Check; errors name the field, as apps[2].version.function.package.sha256.
// Resolve computes an app's configuration: the version's default, the
// deployment's overrides as an RFC 7396 merge patch, then the keys reset
// to the default.
//
// The types are plain values; nothing here is safe or unsafe for
// concurrent use beyond what Go's values are.
package app

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"

	"github.com/edgekit/edgekit/function/spec"
)

// SchemaVersion is the version of the documents this package reads and
// writes. A document with a higher one is refused (ErrSchema): a gateway
// never half-understands a deployment.
const SchemaVersion = 1

// Sentinel errors, wrapped with the field concerned.
var (
	// ErrInvalid: a document breaks a rule; the error names the field.
	ErrInvalid = errors.New("invalid deployment")
	// ErrSchema: a document's schema version is not one this package
	// reads.
	ErrSchema = errors.New("unsupported schema version")
)

// Kind is what an application is made of.
type Kind string

// Kinds.
const (
	KindFunction  Kind = "function"
	KindContainer Kind = "container"
)

// Duration is a time.Duration written in JSON as "30s".
type Duration = spec.Duration

// App is an application: a name unique on a gateway (1-64 letters, digits,
// '.', '_' or '-'), what it is made of, and what it is for.
type App struct {
	Name        string `json:"name"`
	Kind        Kind   `json:"kind"`
	Description string `json:"description,omitempty"`
}

// Version is one immutable version of an application. Exactly one of
// Function and Container is set, as the app's Kind says.
type Version struct {
	// Version labels it: 1-64 letters, digits, '.', '_', '+' or '-'.
	Version   string            `json:"version"`
	Function  *FunctionVersion  `json:"function,omitempty"`
	Container *ContainerVersion `json:"container,omitempty"`
	// Config is the default configuration document (a JSON object).
	Config json.RawMessage `json:"config,omitempty"`
	// ConfigSchema, when set, is a JSON Schema (draft 2020-12) the
	// configuration must satisfy once resolved.
	ConfigSchema json.RawMessage `json:"configSchema,omitempty"`
	// Probation bounds how long the version has, once applied, to prove
	// healthy (a function: started and not crash-looping; a container:
	// running and its probe passing) before the deployment is rolled back.
	// Default 30 s.
	Probation Duration `json:"probation,omitempty"`
}

// FunctionVersion is a function app's code and what starts it. The
// package's manifest must name the app and the version.
type FunctionVersion struct {
	Package  Artifact  `json:"package"`
	Triggers []Trigger `json:"triggers,omitempty"`
	// Driver makes the function a device driver (written against the
	// driver API, docs/FUNCTION-API.md): it runs continuously, one
	// instance, and serves the devices its assignments bind to it.
	Driver bool `json:"driver,omitempty"`
	// Settings, when set, are the package's manifest: the package holds
	// none, as Link IoT Edge's zips hold only the code (index.js or
	// index.py at the root), and the settings that platform keeps beside
	// the code come with the version instead.
	Settings *FunctionSettings `json:"settings,omitempty"`
}

// FunctionSettings are what Link IoT Edge keeps beside a function's code.
type FunctionSettings struct {
	// Runtime is nodejs or python (Link's nodejs8, nodejs10, nodejs12 and
	// python3 name them too).
	Runtime string `json:"runtime"`
	// Handler is file.function; default index.handler.
	Handler string `json:"handler,omitempty"`
	// RunMode is OnDemand (the default: started by its triggers) or
	// LongLived (always running).
	RunMode string `json:"runMode,omitempty"`
	// MemorySize bounds the function's memory in MB.
	MemorySize int `json:"memorySize,omitempty"`
	// Timeout bounds each invocation.
	Timeout Duration `json:"timeout,omitempty"`
	// Environment is the function's environment variables.
	Environment map[string]string `json:"environment,omitempty"`
	// Permissions are what a manifest's permissions are
	// (docs/FUNCTION-API.md, Permissions).
	Permissions spec.Permissions `json:"permissions,omitzero"`
}

// Manifest is the function spec the settings make for app name's version:
// Function Compute's event and context (Link's functions are written for
// it), on the native protocol.
func (s *FunctionSettings) Manifest(name, version string) spec.Function {
	fn := spec.Function{Name: name, Version: version, Handler: s.Handler, Service: spec.ServiceFC, API: spec.APINative,
		MemoryLimitMB: s.MemorySize, Timeout: s.Timeout, Env: s.Environment, Permissions: s.Permissions, Mode: spec.OnDemand}
	if fn.Handler == "" {
		fn.Handler = "index.handler"
	}
	switch {
	case strings.HasPrefix(s.Runtime, "nodejs"):
		fn.Runtime = spec.RuntimeNode
	case strings.HasPrefix(s.Runtime, "python"):
		fn.Runtime = spec.RuntimePython
	}
	if s.RunMode == "LongLived" {
		fn.Mode = spec.Continuous
	}
	return fn
}

var linkRuntimeRE = regexp.MustCompile(`^(nodejs([0-9]+)?|python([0-9.]+)?)$`)

func (s *FunctionSettings) check() *fieldError {
	switch {
	case !linkRuntimeRE.MatchString(s.Runtime):
		return fieldErr("runtime", "%q: want nodejs or python (nodejs8, nodejs10, python3, ...)", s.Runtime)
	case s.RunMode != "" && s.RunMode != "OnDemand" && s.RunMode != "LongLived":
		return fieldErr("runMode", "%q: want OnDemand or LongLived", s.RunMode)
	case s.MemorySize < 0:
		return fieldErr("memorySize", "negative")
	case s.Timeout < 0:
		return fieldErr("timeout", "negative")
	}
	return nil
}

// Device is a device a gateway's assignment binds to a driver app: a name
// unique on the gateway (1-64 letters, digits, '.', '_' or '-'), its thing
// model, the driver's settings for it, and the labels functions find it
// by.
type Device struct {
	Name string `json:"name"`
	// TSL is the thing model as TSL JSON (an object).
	TSL json.RawMessage `json:"tsl"`
	// Config is the driver's own settings for the device (an object).
	Config json.RawMessage   `json:"config,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Artifact is a file to fetch and what vouches for it.
type Artifact struct {
	// URL is where to fetch it: http, https or file.
	URL string `json:"url"`
	// Size in bytes, when known (0: not checked).
	Size int64 `json:"size,omitempty"`
	// SHA256 is its digest, 64 hex digits.
	SHA256 string `json:"sha256"`
	// Signature is ed25519 over the 32-byte digest (base64 in JSON);
	// required when the gateway has a key.
	Signature []byte `json:"signature,omitempty"`
}

// Trigger starts the app's function: a type ("timer", "message", ...) and
// its parameters, as package trigger reads them. Its name is unique within
// the version; on the gateway it becomes "<app>.<name>".
type Trigger struct {
	Name   string          `json:"name"`
	Type   string          `json:"type"`
	Params json.RawMessage `json:"params,omitempty"`
}

// ContainerVersion is a container app's image and how to run it.
type ContainerVersion struct {
	// Image is the image reference, with "@sha256:<digest>" when known.
	Image string `json:"image"`
	// Spec is how to create the container.
	Spec ContainerSpec `json:"spec,omitzero"`
	// Health, when set, is probed: the app is running only while it
	// passes.
	Health *Probe `json:"health,omitempty"`
	// Restart: always (default), on-failure or never.
	Restart string `json:"restart,omitempty"`
	// After names container apps of the same deployment that must be
	// running (and healthy) before this one starts.
	After []string `json:"after,omitempty"`
}

// ContainerSpec is how to create an app's container. Containers get no
// privileges beyond the runtime's default set: a deployment can ask for no
// privileged mode and no added capability. Bind mounts and host devices
// reach the host, so the gateway allows only those its owner lists.
type ContainerSpec struct {
	Command      []string          `json:"command,omitempty"`
	Env          map[string]string `json:"env,omitempty"`
	Mounts       []Mount           `json:"mounts,omitempty"`
	Ports        []Port            `json:"ports,omitempty"`
	Devices      []string          `json:"devices,omitempty"`
	MemoryBytes  int64             `json:"memoryBytes,omitempty"`
	CPUs         float64           `json:"cpus,omitempty"`
	PIDs         int64             `json:"pids,omitempty"`
	NetworkMode  string            `json:"networkMode,omitempty"` // bridge (default), host or none
	User         string            `json:"user,omitempty"`
	WorkingDir   string            `json:"workingDir,omitempty"`
	StopSignal   string            `json:"stopSignal,omitempty"`
	StopGrace    Duration          `json:"stopGrace,omitempty"`
	ReadOnlyRoot bool              `json:"readOnlyRoot,omitempty"`
}

// Mount is a filesystem mounted into a container.
type Mount struct {
	Type     string `json:"type"` // bind, volume or tmpfs
	Source   string `json:"source,omitempty"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Port publishes a container port on the host.
type Port struct {
	HostIP        string `json:"hostIP,omitempty"`
	HostPort      uint16 `json:"hostPort"`
	ContainerPort uint16 `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"` // tcp (default) or udp
}

// Probe is a container's health check: an HTTP GET answering 2xx or 3xx, a
// TCP connect, or a command exiting 0 in the container. Exactly one of
// HTTP, TCP and Exec is set.
type Probe struct {
	HTTP     string   `json:"http,omitempty"`
	TCP      string   `json:"tcp,omitempty"`
	Exec     []string `json:"exec,omitempty"`
	Interval Duration `json:"interval,omitempty"`
	Timeout  Duration `json:"timeout,omitempty"`
	Retries  int      `json:"retries,omitempty"`
}
