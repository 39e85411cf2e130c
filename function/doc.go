// Package function is the function host: edge functions that run on the
// gateway on demand (started by the first event, stopped when idle) or
// continuously (kept alive). It is for gateway firmware that deploys and
// invokes functions, and for function authors who write in-process Go
// handlers.
//
// A Host deploys versions of functions described by a Spec and invokes
// them by name; it satisfies invoke.Invoker, the interface package trigger
// calls. Each deployed version has a scheduler: a bounded queue (full →
// invoke.ErrThrottled, optionally after Options.QueueWait), up to
// MaxInstances instances started as work waits (cold starts are counted),
// on-demand instances stopped after IdleTimeout, Continuous ones kept at
// MinInstances.
//
// An invocation that passes its deadline returns invoke.ErrTimeout at the
// deadline, even when the handler ignores its context: the instance is
// marked stuck and a new one takes its place, so the function keeps its
// capacity (Status shows the stuck instance until its handler returns).
//
// Deploy is atomic: new invocations go to the new version at once;
// invocations queued or running on the previous one finish there, then its
// instances stop. A deploy that fails leaves the previous version serving.
//
// In-process handlers (Runtime "go") are registered with Host.Register and
// named by Spec.Handler. A handler's context carries the Invocation
// (FromContext) and a logger (Logger); a panic becomes an *invoke.Error of
// type "Panic" with the stack in the log. Out-of-process runtimes (the
// Lambda and Function Compute runtime APIs, Node.js and Python bootstraps,
// the native framed protocol) are the next step of this package and run on
// the same scheduler.
//
// All Host methods are safe for concurrent use; Close is safe to call twice.
package function
