package fleet

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/edgekit/edgekit/edge/app"
)

// Sentinel errors, wrapped with what they are about.
var (
	// ErrInvalid: a request breaks a rule; the error names the field.
	ErrInvalid = errors.New("invalid request")
	// ErrNotFound: no app, version, group, instance or deployment has
	// that name.
	ErrNotFound = errors.New("not found")
	// ErrExists: the name is taken (a version with other content, an app
	// created twice).
	ErrExists = errors.New("already exists")
	// ErrState: the deployment is not in a state that allows the request
	// (resume of a running one, pause of a finished one).
	ErrState = errors.New("not allowed in this state")
	// ErrClosed: the fleet was closed.
	ErrClosed = errors.New("fleet closed")
)

// App is an application in the catalogue.
type App struct {
	Name        string    `json:"name"`
	Kind        app.Kind  `json:"kind"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
}

// Version is one immutable version of an app: what a gateway is sent
// (package edge/app's Version: the artifact or image, triggers, the
// default configuration and its schema).
type Version struct {
	App     string      `json:"app"`
	Version app.Version `json:"version"`
	Created time.Time   `json:"created"`
}

// Group is a named label selector, the scope of configuration overrides
// shared by the instances it matches.
type Group struct {
	Name     string    `json:"name"`
	Selector string    `json:"selector"`
	Updated  time.Time `json:"updated"`
}

// Scope of a configuration override: a group's or one instance's.
type Scope struct {
	Group    string `json:"group,omitempty"`
	Instance string `json:"instance,omitempty"`
}

func (s Scope) key() string {
	if s.Instance != "" {
		return "instance:" + s.Instance
	}
	return "group:" + s.Group
}

// ConfigOverride is an RFC 7396 merge patch over an app's default
// configuration for the instances of a scope. On an instance the version's
// default is patched by the overrides of the groups it is in (in group
// name order), then by its own.
type ConfigOverride struct {
	App       string          `json:"app"`
	Scope     Scope           `json:"scope"`
	Overrides json.RawMessage `json:"overrides"`
	Updated   time.Time       `json:"updated"`
}

// Instance is a gateway the fleet knows: registered by the operator, or
// on its first report.
type Instance struct {
	ID      string            `json:"id"`
	Labels  map[string]string `json:"labels,omitempty"`
	Created time.Time         `json:"created"`
}

// Report is what the fleet last heard from an instance.
type Report struct {
	Instance string `json:"instance"`
	// Status is the newest status it reported (nil: none yet).
	Status *app.Status `json:"status,omitempty"`
	// Online is its presence; PresenceTime when the fleet received the
	// change (a gateway's offline Will carries the time it connected).
	Online       bool      `json:"online"`
	PresenceTime time.Time `json:"presenceTime,omitzero"`
	// LastSeen is when the fleet last received anything from it.
	LastSeen time.Time `json:"lastSeen,omitzero"`
	// Changes counts its significant status changes; the last of them
	// are its status history (Fleet.StatusHistory).
	Changes uint64 `json:"changes,omitempty"`
}

// Desired is the deployment document the fleet has for an instance.
type Desired struct {
	Instance string `json:"instance"`
	// Revision only grows; Document carries it.
	Revision uint64 `json:"revision"`
	// Deployment is the fleet deployment it comes from ("" for the
	// empty document of an instance no deployment has reached).
	Deployment string          `json:"deployment"`
	Document   json.RawMessage `json:"document"`
	Updated    time.Time       `json:"updated"`
}

// AppVersion names a version of an app in a deployment.
type AppVersion struct {
	App     string `json:"app"`
	Version string `json:"version"`
}

// Deployment assigns app versions to the instances a selector matches,
// rolled out by its policy. On each instance the matching deployment of
// the highest priority wins (the newest by Created among equals); a
// gateway runs exactly its winner's apps.
type Deployment struct {
	ID       string       `json:"id"`
	Selector string       `json:"selector"`
	Priority int          `json:"priority"`
	Apps     []AppVersion `json:"apps"`
	Policy   Policy       `json:"policy"`

	State   DeploymentState `json:"state"`
	Reason  string          `json:"reason,omitempty"`
	Wave    int             `json:"wave"`             // the wave under way (0-based)
	Waves   []int           `json:"waves"`            // the number of instances in each wave
	BakedAt time.Time       `json:"bakedAt,omitzero"` // when the current wave met its success threshold
	Created time.Time       `json:"created"`
	Updated time.Time       `json:"updated"`
	Started []time.Time     `json:"started,omitempty"` // when instances were sent the document, the last minute's (MaxPerMinute)
}

// DeploymentState is where a deployment's rollout is.
type DeploymentState string

// Deployment states.
const (
	DeploymentRunning    DeploymentState = "running"
	DeploymentPaused     DeploymentState = "paused"    // by the operator or a failure threshold; Reason says which
	DeploymentSucceeded  DeploymentState = "succeeded" // every wave passed
	DeploymentAborted    DeploymentState = "aborted"   // a failure threshold stopped it and the updated instances were rolled back
	DeploymentCancelled  DeploymentState = "cancelled" // by the operator
	DeploymentSuperseded DeploymentState = "superseded"
)

func (s DeploymentState) final() bool {
	return s == DeploymentSucceeded || s == DeploymentAborted || s == DeploymentCancelled || s == DeploymentSuperseded
}

// Policy is how a deployment rolls out.
type Policy struct {
	// Waves split the instances: each a Count or a Percent of all
	// (rounded up, at least 1); the last wave takes the rest. Default:
	// one wave of all, or the waves Exponential gives.
	Waves []Wave `json:"waves,omitempty"`
	// Exponential, when set and Waves is empty, makes waves of First
	// instances, each next one Factor times the one before (as AWS IoT
	// Jobs' exponential rate).
	Exponential *Exponential `json:"exponential,omitempty"`
	// Bake is how long a wave that met its success threshold waits
	// before the next starts.
	Bake app.Duration `json:"bake,omitempty"`
	// SuccessPercent of a wave must succeed for the next to start;
	// default 100.
	SuccessPercent float64 `json:"successPercent,omitempty"`
	// FailurePercent of a wave failed (or timed out) stops the rollout,
	// once MinSample of the wave have finished; default 0: any failure.
	FailurePercent float64 `json:"failurePercent,omitempty"`
	MinSample      int     `json:"minSample,omitempty"`
	// OnFailure is what a breached failure threshold does: "abort"
	// (default; every instance already updated goes back to its previous
	// deployment) or "pause".
	OnFailure string `json:"onFailure,omitempty"`
	// MaxPerMinute bounds the instances sent the document in any minute,
	// spread over it (in any second at most a sixtieth of it, rounded up);
	// 0 is no bound.
	MaxPerMinute int `json:"maxPerMinute,omitempty"`
	// Timeout bounds one instance's update, from the document sent to
	// its final report; then it is timed out (a failure). Default 15 min.
	Timeout app.Duration `json:"timeout,omitempty"`
	// ReportTimeout bounds the silence of an instance being updated
	// before it shows as unknown; default 2 min.
	ReportTimeout app.Duration `json:"reportTimeout,omitempty"`
}

// Wave is one step of a rollout: Count instances, or Percent of all.
type Wave struct {
	Count   int     `json:"count,omitempty"`
	Percent float64 `json:"percent,omitempty"`
}

// Exponential is a rollout whose waves grow by Factor.
type Exponential struct {
	First  int     `json:"first"`
	Factor float64 `json:"factor"`
}

// Target is one instance in one deployment.
type Target struct {
	Deployment string      `json:"deployment"`
	Instance   string      `json:"instance"`
	Wave       int         `json:"wave"`
	State      TargetState `json:"state"`
	Code       string      `json:"code,omitempty"`
	Reason     string      `json:"reason,omitempty"`
	// Revision is the document revision sent for this deployment (0: not
	// sent yet).
	Revision uint64 `json:"revision,omitempty"`
	// Previous is the deployment the instance had before ("" for none),
	// which an abort puts back.
	Previous string    `json:"previous"`
	Sent     time.Time `json:"sent,omitzero"`
	Heard    time.Time `json:"heard,omitzero"` // the last report about Revision
	Updated  time.Time `json:"updated"`
}

// TargetState is where one instance is in a deployment.
type TargetState string

// Target states. Each but the final ones has a bound (Policy.Timeout,
// Policy.ReportTimeout) after which it becomes timed-out or unknown.
const (
	TargetQueued      TargetState = "queued"      // its wave has not started
	TargetSent        TargetState = "sent"        // the document is out, nothing heard about it yet
	TargetDownloading TargetState = "downloading" // the gateway fetches the artifacts
	TargetApplying    TargetState = "applying"    // installing, starting, on probation
	TargetSucceeded   TargetState = "succeeded"
	TargetFailed      TargetState = "failed"      // Code and Reason from the gateway
	TargetRolledBack  TargetState = "rolled-back" // put back on Previous by an abort
	TargetSuperseded  TargetState = "superseded"  // a newer deployment took the instance
	TargetTimedOut    TargetState = "timed-out"   // no final report within Policy.Timeout
	TargetUnknown     TargetState = "unknown"     // offline, or silent past Policy.ReportTimeout
	TargetCancelled   TargetState = "cancelled"   // never sent: the rollout stopped first
)

func (s TargetState) final() bool {
	switch s {
	case TargetSucceeded, TargetFailed, TargetRolledBack, TargetSuperseded, TargetTimedOut, TargetCancelled:
		return true
	}
	return false
}
