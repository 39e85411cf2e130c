package reconcile

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/codepkg"
	"github.com/edgekit/edgekit/internal/safefile"
	"github.com/edgekit/edgekit/trigger"
)

// sets is what the parts are given for a deployment.
type sets struct {
	functions  []function.Spec
	triggers   []trigger.Config
	containers []container.App
	drivers    []Driver
}

// The container app's configuration: a file mounted read-only here, and
// the same document in a variable (when it fits).
const (
	containerConfigPath = "/etc/edgekit/config.json"
	envConfig           = "EDGEKIT_CONFIG"
	maxEnvConfig        = 32 << 10
)

// triggerName is a trigger's name in the trigger set: the app's name, a
// dot, the trigger's own.
func triggerName(appName, trig string) string { return appName + "." + trig }

// validate checks what a deployment asks of this gateway before anything
// is fetched: the instance, each configuration against its schema, each
// trigger's parameters, a container runtime for container apps, and the
// host paths container apps reach.
func (r *Reconciler) validate(d *app.Deployment) error {
	if d.Instance != "" && d.Instance != r.opts.Instance {
		return fail("", app.CodeInvalid, fmt.Errorf("the deployment is for instance %q, this gateway is %q", d.Instance, r.opts.Instance))
	}
	var trigs []trigger.Config
	var drivers []Driver
	for _, a := range d.Apps {
		if _, err := r.config(a); err != nil {
			return err
		}
		switch a.App.Kind {
		case app.KindFunction:
			trigs = append(trigs, triggersOf(a)...)
			if d, ok := driverOf(a); ok {
				if r.opts.Drivers == nil {
					return fail(a.App.Name, app.CodeRuntimeDown, errors.New("this gateway serves no driver apps"))
				}
				drivers = append(drivers, d)
			}
		case app.KindContainer:
			if r.opts.Containers == nil {
				return fail(a.App.Name, app.CodeRuntimeDown, errors.New("this gateway has no container runtime"))
			}
			if err := r.checkHostPaths(a); err != nil {
				return err
			}
		}
	}
	if err := r.opts.Triggers.Check(trigs); err != nil {
		name, _, _ := strings.Cut(triggerConfigName(err, trigs), ".")
		return fail(name, app.CodeInvalid, err)
	}
	if len(drivers) > 0 {
		if err := r.opts.Drivers.Check(drivers); err != nil {
			return fail(driverName(err, drivers), app.CodeInvalid, err)
		}
	}
	return nil
}

// driverOf is a function app's binding of devices, when it is a driver
// app.
func driverOf(a app.Assignment) (Driver, bool) {
	return Driver{Function: a.App.Name, Devices: a.Devices}, a.Version.Function.Driver
}

// driverName finds which driver app an error from the Drivers is about,
// by the name it carries.
func driverName(err error, drivers []Driver) string {
	for _, d := range drivers {
		if strings.Contains(err.Error(), "driver app "+d.Function+":") {
			return d.Function
		}
	}
	return ""
}

// triggerConfigName finds which trigger an error from Check is about, by
// the name it carries.
func triggerConfigName(err error, trigs []trigger.Config) string {
	for _, t := range trigs {
		if strings.Contains(err.Error(), "trigger "+t.Name+":") {
			return t.Name
		}
	}
	return ""
}

// checkHostPaths refuses bind mounts and devices outside Options.HostPaths.
func (r *Reconciler) checkHostPaths(a app.Assignment) error {
	allowed := func(p string) bool {
		p = filepath.Clean(p)
		return slices.ContainsFunc(r.opts.HostPaths, func(prefix string) bool {
			prefix = filepath.Clean(prefix)
			return p == prefix || strings.HasPrefix(p, prefix+"/")
		})
	}
	s := a.Version.Container.Spec
	for i, m := range s.Mounts {
		if m.Type == "bind" && !allowed(m.Source) {
			return fail(a.App.Name, app.CodeInvalid, fmt.Errorf("spec.mounts[%d]: bind mount of %s: not among the host paths this gateway allows", i, m.Source))
		}
	}
	for i, dev := range s.Devices {
		if !allowed(dev) {
			return fail(a.App.Name, app.CodeInvalid, fmt.Errorf("spec.devices[%d]: %s: not among the host paths this gateway allows", i, dev))
		}
	}
	return nil
}

// config resolves an app's configuration and checks it against the
// version's schema. The schema may not load anything: a $ref to a file or
// URL is refused.
func (r *Reconciler) config(a app.Assignment) (json.RawMessage, error) {
	cfg, err := a.Resolve()
	if err != nil {
		return nil, fail(a.App.Name, app.CodeInvalid, err)
	}
	if len(bytes.TrimSpace(a.Version.ConfigSchema)) == 0 {
		return cfg, nil
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(a.Version.ConfigSchema))
	if err != nil {
		return nil, fail(a.App.Name, app.CodeInvalid, fmt.Errorf("version.configSchema: %w", err))
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(jsonschema.SchemeURLLoader{}) // nothing outside the document
	const loc = "edgekit:config-schema.json"
	if err := c.AddResource(loc, doc); err != nil {
		return nil, fail(a.App.Name, app.CodeInvalid, fmt.Errorf("version.configSchema: %w", err))
	}
	sch, err := c.Compile(loc)
	if err != nil {
		return nil, fail(a.App.Name, app.CodeInvalid, fmt.Errorf("version.configSchema: %w", err))
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(cfg))
	if err != nil {
		return nil, fail(a.App.Name, app.CodeInvalid, err)
	}
	if err := sch.Validate(v); err != nil {
		return nil, fail(a.App.Name, app.CodeInvalid, fmt.Errorf("the configuration does not satisfy the version's schema: %w", err))
	}
	return cfg, nil
}

func triggersOf(a app.Assignment) []trigger.Config {
	var out []trigger.Config
	for _, t := range a.Version.Function.Triggers {
		out = append(out, trigger.Config{Name: triggerName(a.App.Name, t.Name), Type: t.Type, Function: a.App.Name, Params: t.Params})
	}
	return out
}

// setsOf builds what the parts are given for d, from what is on disk:
// function specs from the installed packages, container apps with their
// configuration files written. With verify, each package's files are
// checked against what was installed first (a restart, a rollback: the
// disk has had time to change since); a fetch checks the packages it
// finds installed itself. An app that cannot be built is left out, and
// its error joined to the one returned.
func (r *Reconciler) setsOf(d *app.Deployment, verify bool) (sets, error) {
	var s sets
	var errs []error
	for _, a := range d.Apps {
		cfg, err := r.config(a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		switch a.App.Kind {
		case app.KindFunction:
			// What is on disk is checked against what was installed: a file
			// changed since (a flipped byte, a hand) costs this app only.
			if verify {
				if err := r.opts.Packages.Verify(a.App.Name, a.Version.Version); errors.Is(err, codepkg.ErrDamaged) {
					errs = append(errs, fail(a.App.Name, app.CodeInstall, err))
					continue
				}
			}
			spec, err := r.opts.Packages.Get(a.App.Name, a.Version.Version)
			if err != nil {
				errs = append(errs, fail(a.App.Name, app.CodeRollbackMissing, err))
				continue
			}
			if err := checkPublish(spec.Permissions.Publish); err != nil {
				errs = append(errs, fail(a.App.Name, app.CodeInvalid, err))
				continue
			}
			if len(cfg) > 2 || len(spec.Config) == 0 { // the deployment's configuration, unless it is {} and the package has its own
				spec.Config = cfg
			}
			if d, ok := driverOf(a); ok {
				// A driver keeps its devices' links in its process: one,
				// always running.
				spec.Mode, spec.MinInstances, spec.MaxInstances = function.Continuous, 1, 1
				s.drivers = append(s.drivers, d)
			}
			s.functions = append(s.functions, spec)
			s.triggers = append(s.triggers, triggersOf(a)...)
		case app.KindContainer:
			c, err := r.containerApp(a, cfg)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			s.containers = append(s.containers, c)
		}
	}
	return s, errors.Join(errs...)
}

// containerApp is a container app as the manager takes it. It gets no
// privileges: Privileged is never set.
func (r *Reconciler) containerApp(a app.Assignment, cfg json.RawMessage) (container.App, error) {
	v := a.Version.Container
	sum := sha256.Sum256(cfg)
	file := filepath.Join(r.opts.Dir, "config", a.App.Name, hex.EncodeToString(sum[:8])+".json")
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return container.App{}, fail(a.App.Name, app.CodeInstall, err)
	}
	if err := safefile.Write(file, cfg, 0o644); err != nil {
		return container.App{}, fail(a.App.Name, app.CodeInstall, err)
	}
	env := map[string]string{}
	for k, val := range v.Spec.Env {
		env[k] = val
	}
	env["EDGEKIT_APP"], env["EDGEKIT_VERSION"] = a.App.Name, a.Version.Version
	if len(cfg) <= maxEnvConfig {
		env[envConfig] = string(cfg)
	}
	mounts := []container.Mount{{Type: "bind", Source: file, Target: containerConfigPath, ReadOnly: true}}
	for _, m := range v.Spec.Mounts {
		mounts = append(mounts, container.Mount{Type: m.Type, Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly})
	}
	var ports []container.Port
	for _, p := range v.Spec.Ports {
		ports = append(ports, container.Port{HostIP: p.HostIP, HostPort: p.HostPort, ContainerPort: p.ContainerPort, Protocol: p.Protocol})
	}
	c := container.App{
		Name: a.App.Name, Version: a.Version.Version, Pull: r.opts.Pull,
		Spec: container.Spec{
			Image: v.Image, Command: slices.Clone(v.Spec.Command), Env: env, Mounts: mounts, Ports: ports,
			Devices:     slices.Clone(v.Spec.Devices),
			Resources:   container.Resources{MemoryBytes: v.Spec.MemoryBytes, CPUs: v.Spec.CPUs, PIDs: v.Spec.PIDs},
			NetworkMode: v.Spec.NetworkMode, User: v.Spec.User, WorkingDir: v.Spec.WorkingDir,
			StopSignal: v.Spec.StopSignal, StopGrace: time.Duration(v.Spec.StopGrace), ReadOnlyRoot: v.Spec.ReadOnlyRoot,
		},
		Restart:   container.RestartPolicy(v.Restart),
		After:     slices.Clone(v.After),
		Probation: r.probationOf(a),
	}
	if h := v.Health; h != nil {
		c.Health = &container.Probe{HTTP: h.HTTP, TCP: h.TCP, Exec: slices.Clone(h.Exec), Interval: time.Duration(h.Interval), Timeout: time.Duration(h.Timeout), Retries: h.Retries}
	}
	return c, nil
}

// applySets gives the parts next: removals first, dependents before what
// they depend on (triggers, driver apps' devices, functions, then
// containers); then driver apps' devices, containers in their start order,
// functions, triggers. A failure names the changed
// app it is about when it can.
func (r *Reconciler) applySets(ctx context.Context, next sets, changed map[string]bool) error {
	cur := r.applied
	keepFn := map[string]bool{}
	for _, f := range next.functions {
		keepFn[f.Name] = true
	}
	if trigs := slices.DeleteFunc(slices.Clone(cur.triggers), func(t trigger.Config) bool { return !keepFn[t.Function] }); len(trigs) < len(cur.triggers) {
		if err := r.opts.Triggers.Apply(ctx, trigs); err != nil {
			return fail("", app.CodeStart, fmt.Errorf("removing triggers: %w", err))
		}
	}
	if drv := slices.DeleteFunc(slices.Clone(cur.drivers), func(d Driver) bool { return !keepFn[d.Function] }); len(drv) < len(cur.drivers) {
		if err := r.opts.Drivers.Apply(ctx, drv); err != nil {
			return fail("", app.CodeStart, fmt.Errorf("removing drivers: %w", err))
		}
		r.applied.drivers = drv
	}
	if fns := slices.DeleteFunc(slices.Clone(cur.functions), func(f function.Spec) bool { return !keepFn[f.Name] }); len(fns) < len(cur.functions) {
		if err := r.opts.Functions.Apply(ctx, fns); err != nil {
			return fail("", app.CodeStart, fmt.Errorf("removing functions: %w", err))
		}
	}
	r.applied.functions = slices.DeleteFunc(r.applied.functions, func(f function.Spec) bool { return !keepFn[f.Name] })
	// Driver apps get their devices before their functions start, so that
	// a driver's process is told them when it says hello (Link IoT Edge's
	// drivers read their device list once, at start).
	if r.opts.Drivers != nil && (len(next.drivers) > 0 || len(r.applied.drivers) > 0) {
		if err := r.opts.Drivers.Apply(ctx, next.drivers); err != nil {
			return fail(driverName(err, next.drivers), app.CodeStart, err)
		}
		r.applied.drivers = next.drivers
	}
	if r.opts.Containers != nil {
		if err := r.opts.Containers.Apply(ctx, next.containers); err != nil {
			return fail("", app.CodeStart, fmt.Errorf("containers: %w", err))
		}
		r.applied.containers = next.containers
	}
	if err := r.opts.Functions.Apply(ctx, next.functions); err != nil {
		return fail(r.failedFunction(next, changed), app.CodeStart, err)
	}
	r.applied.functions = next.functions
	if err := r.opts.Triggers.Apply(ctx, next.triggers); err != nil {
		name, _, _ := strings.Cut(triggerConfigName(err, next.triggers), ".")
		return fail(name, app.CodeStart, err)
	}
	r.applied.triggers = next.triggers
	return nil
}

// failedFunction names the changed function whose deploy failed.
func (r *Reconciler) failedFunction(next sets, changed map[string]bool) string {
	for _, f := range next.functions {
		if !changed[f.Name] {
			continue
		}
		if st, err := r.opts.Functions.Status(f.Name); err == nil && (st.Phase == function.PhaseFailed || st.DeployError != "") {
			return f.Name
		}
	}
	return ""
}

// checkPublish refuses a manifest's publish permissions that are not MQTT
// topic filters (package spec leaves their syntax to the gateway).
func checkPublish(filters []string) error {
	for i, f := range filters {
		if err := bus.ValidateFilter(f); err != nil {
			return fmt.Errorf("the manifest's permissions.publish[%d]: %w", i, err)
		}
	}
	return nil
}
