package app

import (
	"encoding/json"
	"time"
)

// Phase is where one application is in a deployment.
type Phase string

// Phases, in the order a deployment moves an app through them.
const (
	PhasePending     Phase = "pending"     // not yet worked on
	PhaseDownloading Phase = "downloading" // its artifact is being fetched (Progress)
	PhaseInstalling  Phase = "installing"  // unpacking, pulling, creating
	PhaseStarting    Phase = "starting"    // applied, its first instance or container starting
	PhaseProbation   Phase = "probation"   // applied, proving healthy before the commit
	PhaseRunning     Phase = "running"
	PhaseFailed      Phase = "failed"      // Code and Reason say why
	PhaseRolledBack  Phase = "rolled-back" // back on RolledBackFrom's predecessor; Reason says why
	PhaseRemoved     Phase = "removed"     // taken off the gateway by this deployment
)

// Outcome is where a deployment as a whole is.
type Outcome string

// Outcomes.
const (
	OutcomeInProgress Outcome = "in-progress"
	OutcomeSucceeded  Outcome = "succeeded"
	// OutcomeRolledBack: it failed (Reason says why) and every app was put
	// back as the last good deployment had it.
	OutcomeRolledBack Outcome = "rolled-back"
	// OutcomeRollbackFailed: it failed, and putting the last good
	// deployment back failed too; the apps' phases say where each is.
	OutcomeRollbackFailed Outcome = "rollback-failed"
	// OutcomeSuperseded: a newer revision came while it was in progress.
	OutcomeSuperseded Outcome = "superseded"
	// OutcomeRejected: it broke a rule (Reason) and nothing was changed.
	OutcomeRejected Outcome = "rejected"
)

// Failure codes in AppStatus.Code and Status.Code, for programs to branch
// on; Reason says the rest in words.
const (
	CodeInvalid         = "Invalid"        // the document or a configuration broke a rule
	CodeDownload        = "DownloadFailed" // the artifact could not be fetched in time
	CodeChecksum        = "ChecksumMismatch"
	CodeSignature       = "SignatureInvalid"
	CodeInstall         = "InstallFailed" // unpacking, pulling or creating failed
	CodeStart           = "StartFailed"   // the app did not start
	CodeUnhealthy       = "Unhealthy"     // its probe did not pass within probation
	CodeCrashLoop       = "CrashLoop"     // it kept exiting
	CodeRuntimeDown     = "RuntimeUnavailable"
	CodeDependency      = "DependencyFailed" // another app of the deployment failed
	CodeRollbackMissing = "RollbackUnavailable"
)

// Status is what a gateway reports of its deployments.
type Status struct {
	Schema   int    `json:"schema"`
	Instance string `json:"instance"`
	// Deployment and Revision are the deployment this status is about:
	// the newest the gateway has taken.
	Deployment string  `json:"deployment"`
	Revision   uint64  `json:"revision"`
	Outcome    Outcome `json:"outcome"`
	Code       string  `json:"code,omitempty"`
	Reason     string  `json:"reason,omitempty"`
	// Running is the deployment the gateway's apps run now (the last
	// good one while another is in progress or after a rollback).
	Running *Ref        `json:"running,omitempty"`
	Apps    []AppStatus `json:"apps"`
	Time    time.Time   `json:"time"`
}

// Ref names a deployment.
type Ref struct {
	Deployment string `json:"deployment"`
	Revision   uint64 `json:"revision"`
}

// AppStatus is one application's state in a deployment.
type AppStatus struct {
	App      string    `json:"app"`
	Kind     Kind      `json:"kind"`
	Version  string    `json:"version"`
	Phase    Phase     `json:"phase"`
	Progress *Progress `json:"progress,omitempty"`
	Code     string    `json:"code,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	// RolledBackFrom is the version given up in a rollback.
	RolledBackFrom string    `json:"rolledBackFrom,omitempty"`
	Since          time.Time `json:"since"`
}

// Progress counts the bytes of a download.
type Progress struct {
	Done  int64 `json:"done"`
	Total int64 `json:"total,omitempty"` // 0: not known
}

// Clone returns a copy of s that shares nothing with it.
func (s Status) Clone() Status {
	c := s
	if s.Running != nil {
		r := *s.Running
		c.Running = &r
	}
	c.Apps = make([]AppStatus, len(s.Apps))
	for i, a := range s.Apps {
		if a.Progress != nil {
			p := *a.Progress
			a.Progress = &p
		}
		c.Apps[i] = a
	}
	return c
}

// PeekRef reads what a deployment document says it is (its id and
// revision), as far as it reads at all: for a status that rejects a
// document ParseDeployment refused.
func PeekRef(b []byte) Ref {
	var r struct {
		ID       string `json:"id"`
		Revision uint64 `json:"revision"`
	}
	if len(b) <= MaxDocument {
		_ = json.Unmarshal(b, &r)
	}
	if len(r.ID) > 128 {
		r.ID = r.ID[:128]
	}
	return Ref{Deployment: r.ID, Revision: r.Revision}
}
