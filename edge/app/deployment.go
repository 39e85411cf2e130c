package app

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/edgekit/edgekit/function/spec"
	"github.com/edgekit/edgekit/internal/order"
)

// Deployment is the desired set of applications for one gateway. Revision
// only grows: a gateway applies a document whose revision is above the
// one it runs, and ignores older ones.
type Deployment struct {
	// Schema is SchemaVersion (0 is read as 1).
	Schema int `json:"schema"`
	// ID names the deployment (the fleet's rollout, say): 1-128 letters,
	// digits, '.', '_', ':' or '-'.
	ID string `json:"id"`
	// Instance is the gateway it is for; empty for any.
	Instance string `json:"instance,omitempty"`
	// Revision orders the documents sent to one gateway; at least 1.
	Revision uint64 `json:"revision"`
	// Apps are the applications the gateway runs, each once; any not
	// here is removed.
	Apps []Assignment `json:"apps"`
}

// Assignment is one application in a deployment: which version, and the
// gateway's own configuration of it.
type Assignment struct {
	App     App     `json:"app"`
	Version Version `json:"version"`
	Config  Config  `json:"config,omitzero"`
	// Devices are the gateway's devices the app serves, for a driver
	// app (FunctionVersion.Driver) only.
	Devices []Device `json:"devices,omitempty"`
}

// Config is a gateway's configuration of an app: Overrides applied to the
// version's default as an RFC 7396 merge patch, then the values at Reset
// (JSON Pointers, RFC 6901, as "/limits/max") set back to the default's.
type Config struct {
	Overrides json.RawMessage `json:"overrides,omitempty"`
	Reset     []string        `json:"reset,omitempty"`
}

// MaxDocument bounds a deployment or status document.
const MaxDocument = 4 << 20

// ParseDeployment reads a deployment document: at most MaxDocument bytes
// of JSON, no field this package does not know, a schema it reads, and
// every rule of Check. The error names the field that is wrong.
func ParseDeployment(b []byte) (*Deployment, error) {
	if len(b) > MaxDocument {
		return nil, fmt.Errorf("%w: the document is %d bytes, more than %d", ErrInvalid, len(b), MaxDocument)
	}
	var schema struct {
		Schema int `json:"schema"`
	}
	if err := json.Unmarshal(b, &schema); err != nil {
		return nil, fmt.Errorf("%w: not a JSON object: %v", ErrInvalid, err)
	}
	if schema.Schema > SchemaVersion || schema.Schema < 0 {
		return nil, fmt.Errorf("%w: schema %d (this gateway reads up to %d)", ErrSchema, schema.Schema, SchemaVersion)
	}
	var d Deployment
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: data after the document", ErrInvalid)
	}
	if d.Schema == 0 {
		d.Schema = SchemaVersion
	}
	if err := d.Check(); err != nil {
		return nil, err
	}
	return &d, nil
}

var (
	idRE      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)
	triggerRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	imageRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$`)
	digestRE  = regexp.MustCompile(`@sha256:[0-9a-f]{64}$`)
)

// Check applies every rule a deployment must follow and names the first
// field that breaks one (wrapping ErrInvalid).
func (d *Deployment) Check() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalid, field, fmt.Sprintf(format, args...))
	}
	if d.Schema != SchemaVersion {
		return fmt.Errorf("%w: schema %d (this gateway reads %d)", ErrSchema, d.Schema, SchemaVersion)
	}
	if !idRE.MatchString(d.ID) {
		return bad("id", "%q: want 1-128 letters, digits, '.', '_', ':' or '-'", d.ID)
	}
	if d.Instance != "" && !idRE.MatchString(d.Instance) {
		return bad("instance", "%q: want 1-128 letters, digits, '.', '_', ':' or '-'", d.Instance)
	}
	if d.Revision == 0 {
		return bad("revision", "0: revisions start at 1")
	}
	kinds := map[string]Kind{}
	devices := map[string]string{}
	for i, a := range d.Apps {
		field := fmt.Sprintf("apps[%d]", i)
		if err := a.check(field); err != nil {
			return err
		}
		for j, dev := range a.Devices {
			if other, dup := devices[dev.Name]; dup {
				return bad(fmt.Sprintf("%s.devices[%d].name", field, j), "%q is %s's already", dev.Name, other)
			}
			devices[dev.Name] = a.App.Name
		}
		if _, dup := kinds[a.App.Name]; dup {
			return bad(field+".app.name", "%q appears twice", a.App.Name)
		}
		kinds[a.App.Name] = a.App.Kind
	}
	return checkOrder(d.Apps, kinds)
}

func (a *Assignment) check(field string) error {
	bad := func(f, format string, args ...any) error {
		return fmt.Errorf("%w: %s.%s: %s", ErrInvalid, field, f, fmt.Sprintf(format, args...))
	}
	if !spec.ValidName(a.App.Name) {
		return bad("app.name", "%q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", a.App.Name)
	}
	field += " (" + a.App.Name + ")"
	if !spec.ValidVersion(a.Version.Version) {
		return bad("version.version", "%q: want 1-64 letters, digits, '.', '_', '+' or '-', starting with a letter or digit", a.Version.Version)
	}
	switch a.App.Kind {
	case KindFunction:
		if a.Version.Function == nil || a.Version.Container != nil {
			return bad("version", "a function app's version has function and no container")
		}
		if err := a.Version.Function.check(); err != nil {
			return bad("version.function."+err.field, "%s", err.msg)
		}
	case KindContainer:
		if a.Version.Container == nil || a.Version.Function != nil {
			return bad("version", "a container app's version has container and no function")
		}
		if err := a.Version.Container.check(); err != nil {
			return bad("version.container."+err.field, "%s", err.msg)
		}
	default:
		return bad("app.kind", "%q: want function or container", a.App.Kind)
	}
	if len(a.Devices) > 0 && (a.Version.Function == nil || !a.Version.Function.Driver) {
		return bad("devices", "only a driver app (version.function.driver) serves devices")
	}
	names := map[string]bool{}
	for i, dev := range a.Devices {
		f := fmt.Sprintf("devices[%d]", i)
		switch {
		case !spec.ValidName(dev.Name):
			return bad(f+".name", "%q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", dev.Name)
		case names[dev.Name]:
			return bad(f+".name", "%q appears twice", dev.Name)
		}
		names[dev.Name] = true
		if err := checkObject(dev.TSL); err != nil || len(bytes.TrimSpace(dev.TSL)) == 0 {
			return bad(f+".tsl", "want the thing model, a TSL object")
		}
		if err := checkObject(dev.Config); err != nil {
			return bad(f+".config", "%v", err)
		}
	}
	if a.Version.Probation < 0 {
		return bad("version.probation", "negative")
	}
	if err := checkObject(a.Version.Config); err != nil {
		return bad("version.config", "%v", err)
	}
	if len(a.Version.ConfigSchema) > 0 && !json.Valid(a.Version.ConfigSchema) {
		return bad("version.configSchema", "not valid JSON")
	}
	if len(a.Config.Overrides) > 0 && !json.Valid(a.Config.Overrides) {
		return bad("config.overrides", "not valid JSON")
	}
	for i, p := range a.Config.Reset {
		if _, err := parsePointer(p); err != nil {
			return bad(fmt.Sprintf("config.reset[%d]", i), "%v", err)
		}
	}
	return nil
}

// fieldError names a field below the one its caller knows.
type fieldError struct{ field, msg string }

func fieldErr(field, format string, args ...any) *fieldError {
	return &fieldError{field, fmt.Sprintf(format, args...)}
}

func (f *FunctionVersion) check() *fieldError {
	if err := f.Package.check(); err != nil {
		return &fieldError{"package." + err.field, err.msg}
	}
	if f.Settings != nil {
		if err := f.Settings.check(); err != nil {
			return &fieldError{"settings." + err.field, err.msg}
		}
	}
	seen := map[string]bool{}
	for i, t := range f.Triggers {
		field := fmt.Sprintf("triggers[%d]", i)
		switch {
		case !triggerRE.MatchString(t.Name):
			return fieldErr(field+".name", "%q: want 1-63 letters, digits, '.', '_' or '-'", t.Name)
		case seen[t.Name]:
			return fieldErr(field+".name", "%q appears twice", t.Name)
		case t.Type == "":
			return fieldErr(field+".type", "empty")
		case len(t.Params) > 0 && !json.Valid(t.Params):
			return fieldErr(field+".params", "not valid JSON")
		}
		seen[t.Name] = true
	}
	return nil
}

func (a *Artifact) check() *fieldError {
	u, err := url.Parse(a.URL)
	switch {
	case a.URL == "" || err != nil:
		return fieldErr("url", "%q: not a URL", a.URL)
	case u.Scheme == "http" || u.Scheme == "https":
		if u.Host == "" {
			return fieldErr("url", "%q: no host", a.URL)
		}
		if u.User != nil {
			return fieldErr("url", "credentials in the URL: the gateway's options hold them")
		}
	case u.Scheme == "file":
		if u.Path == "" || !strings.HasPrefix(u.Path, "/") {
			return fieldErr("url", "%q: a file URL needs an absolute path", a.URL)
		}
	default:
		return fieldErr("url", "scheme %q: want http, https or file", u.Scheme)
	}
	if b, err := hex.DecodeString(a.SHA256); err != nil || len(b) != 32 {
		return fieldErr("sha256", "%q: want 64 hex digits", a.SHA256)
	}
	if a.Size < 0 {
		return fieldErr("size", "negative")
	}
	if len(a.Signature) != 0 && len(a.Signature) != 64 {
		return fieldErr("signature", "%d bytes: an ed25519 signature is 64", len(a.Signature))
	}
	return nil
}

func (c *ContainerVersion) check() *fieldError {
	if !imageRE.MatchString(c.Image) || strings.Contains(c.Image, "@") && !digestRE.MatchString(c.Image) {
		return fieldErr("image", "%q: want a reference such as registry/name:tag, with @sha256:<64 hex digits> when pinned", c.Image)
	}
	switch c.Restart {
	case "", "always", "on-failure", "never":
	default:
		return fieldErr("restart", "%q: want always, on-failure or never", c.Restart)
	}
	s := c.Spec
	switch s.NetworkMode {
	case "", "bridge", "host", "none":
	default:
		return fieldErr("spec.networkMode", "%q: want bridge, host or none", s.NetworkMode)
	}
	if s.MemoryBytes < 0 || s.CPUs < 0 || s.PIDs < 0 || s.StopGrace < 0 {
		return fieldErr("spec", "negative resource bound or stop grace")
	}
	for i, m := range s.Mounts {
		field := fmt.Sprintf("spec.mounts[%d]", i)
		switch {
		case m.Type != "bind" && m.Type != "volume" && m.Type != "tmpfs":
			return fieldErr(field+".type", "%q: want bind, volume or tmpfs", m.Type)
		case !strings.HasPrefix(m.Target, "/"):
			return fieldErr(field+".target", "%q: want an absolute path in the container", m.Target)
		case m.Type == "bind" && !strings.HasPrefix(m.Source, "/"):
			return fieldErr(field+".source", "%q: a bind mount's source is an absolute host path", m.Source)
		case m.Type == "volume" && !spec.ValidName(m.Source):
			return fieldErr(field+".source", "%q: a volume's name", m.Source)
		}
	}
	for i, p := range s.Ports {
		if p.ContainerPort == 0 {
			return fieldErr(fmt.Sprintf("spec.ports[%d].containerPort", i), "0")
		}
		if p.Protocol != "" && p.Protocol != "tcp" && p.Protocol != "udp" {
			return fieldErr(fmt.Sprintf("spec.ports[%d].protocol", i), "%q: want tcp or udp", p.Protocol)
		}
	}
	for k := range s.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return fieldErr("spec.env", "%q is not a variable name", k)
		}
	}
	if h := c.Health; h != nil {
		n := 0
		for _, set := range []bool{h.HTTP != "", h.TCP != "", len(h.Exec) > 0} {
			if set {
				n++
			}
		}
		if n != 1 {
			return fieldErr("health", "want exactly one of http, tcp and exec")
		}
		if h.Interval < 0 || h.Timeout < 0 || h.Retries < 0 {
			return fieldErr("health", "negative interval, timeout or retries")
		}
	}
	return nil
}

// checkOrder checks that After names container apps of the deployment and
// makes no cycle.
func checkOrder(apps []Assignment, kinds map[string]Kind) error {
	after := map[string][]string{}
	for i, a := range apps {
		if a.Version.Container == nil {
			continue
		}
		for j, dep := range a.Version.Container.After {
			if kinds[dep] != KindContainer {
				return fmt.Errorf("%w: apps[%d] (%s).version.container.after[%d]: %q is not a container app of this deployment", ErrInvalid, i, a.App.Name, j, dep)
			}
		}
		after[a.App.Name] = a.Version.Container.After
	}
	names := make([]string, len(apps))
	for i, a := range apps {
		names[i] = a.App.Name
	}
	if c := order.Cycle(names, after); c != nil {
		return fmt.Errorf("%w: container apps start after each other in a cycle: %s", ErrInvalid, strings.Join(c, " -> "))
	}
	return nil
}

// checkObject accepts an empty document or a JSON object.
func checkObject(b json.RawMessage) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		return errors.New("want a JSON object")
	}
	return nil
}

// Names returns the apps' names, in the deployment's order.
func (d *Deployment) Names() []string {
	out := make([]string, len(d.Apps))
	for i, a := range d.Apps {
		out[i] = a.App.Name
	}
	return out
}

// Find returns the named app's assignment.
func (d *Deployment) Find(name string) (Assignment, bool) {
	i := slices.IndexFunc(d.Apps, func(a Assignment) bool { return a.App.Name == name })
	if i < 0 {
		return Assignment{}, false
	}
	return d.Apps[i], true
}
