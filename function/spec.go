package function

import "github.com/edgekit/edgekit/function/spec"

// The types of a function version live in package function/spec, which
// builds on every OS for the tools that make and sign packages; these
// aliases are the names the host's API uses.
type (
	// Spec is one version of one function (see spec.Function).
	Spec = spec.Function
	// Runtime is how a function's code runs.
	Runtime = spec.Runtime
	// Mode is when a function's instances run.
	Mode = spec.Mode
	// API names the runtime API an out-of-process function speaks.
	API = spec.API
	// Service names the cloud service a function was written for.
	Service = spec.Service
	// Duration is a time.Duration that reads and writes JSON as "10s".
	Duration = spec.Duration
	// User is a numeric uid and gid.
	User = spec.User
	// Permissions is spec.Permissions.
	Permissions = spec.Permissions
)

// Runtimes, run modes, runtime APIs and services (see package spec).
const (
	RuntimeGo         = spec.RuntimeGo
	RuntimeExecutable = spec.RuntimeExecutable
	RuntimeNode       = spec.RuntimeNode
	RuntimePython     = spec.RuntimePython

	OnDemand   = spec.OnDemand
	Continuous = spec.Continuous

	APILambda = spec.APILambda
	APIFC     = spec.APIFC
	APINative = spec.APINative

	ServiceLambda = spec.ServiceLambda
	ServiceFC     = spec.ServiceFC
)

// The defaults of a Spec (see package spec for why each).
const (
	DefaultTimeout       = spec.DefaultTimeout
	DefaultIdleTimeout   = spec.DefaultIdleTimeout
	DefaultMaxInstances  = spec.DefaultMaxInstances
	DefaultQueueSize     = spec.DefaultQueueSize
	DefaultMemoryLimitMB = spec.DefaultMemoryLimitMB
	DefaultMaxProcesses  = spec.DefaultMaxProcesses
)

// ErrInvalidSpec means a Spec breaks a rule; the message names the field.
var ErrInvalidSpec = spec.ErrInvalid
