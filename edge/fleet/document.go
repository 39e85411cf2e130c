package fleet

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/edgekit/edgekit/edge/app"
)

// source is what a document is made from: the catalogue, the groups and
// overrides, the instances' labels. The lease holder reads its view; a
// Deploy's check reads the store.
type source interface {
	app(name string) (App, error)
	version(appName, version string) (Version, error)
	groups() []groupView
	overrides(appName string) map[string]ConfigOverride // by scope key
	labels(instance string) map[string]string
}

type groupView struct {
	Group
	sel Selector
}

// document builds the deployment document of revision rev for an
// instance: the apps' versions, each with its configuration overrides
// resolved for that instance (the version's default, patched by its groups'
// overrides in name order, then its own) and sent as one merge patch.
func (f *Fleet) document(ctx context.Context, src source, id string, apps []AppVersion, instance string, rev uint64) ([]byte, error) {
	d := app.Deployment{Schema: app.SchemaVersion, ID: id, Instance: instance, Revision: rev, Apps: make([]app.Assignment, 0, len(apps))}
	labels := src.labels(instance)
	for _, av := range apps {
		a, err := src.app(av.App)
		if err != nil {
			return nil, err
		}
		v, err := src.version(av.App, av.Version)
		if err != nil {
			return nil, err
		}
		asg := app.Assignment{App: app.App{Name: a.Name, Kind: a.Kind, Description: a.Description}, Version: v.Version}
		if ovs := src.overrides(av.App); len(ovs) > 0 {
			var patches []json.RawMessage
			for _, g := range src.groups() {
				if o, ok := ovs[Scope{Group: g.Name}.key()]; ok && g.sel.Matches(labels) {
					patches = append(patches, o.Overrides)
				}
			}
			if o, ok := ovs[Scope{Instance: instance}.key()]; ok {
				patches = append(patches, o.Overrides)
			}
			if patch, err := composePatches(v.Version.Config, patches); err != nil {
				return nil, fmt.Errorf("app %s: configuration: %w", av.App, err)
			} else if patch != nil {
				asg.Config.Overrides = patch
			}
		}
		d.Apps = append(d.Apps, asg)
	}
	if err := d.Check(); err != nil {
		return nil, err
	}
	for i := range d.Apps {
		if _, err := d.Apps[i].Resolve(); err != nil {
			return nil, err
		}
	}
	return json.Marshal(d)
}

// composePatches returns the one merge patch that takes the default
// document where the patches, applied in turn, take it; nil when they
// change nothing.
func composePatches(def json.RawMessage, patches []json.RawMessage) (json.RawMessage, error) {
	decodeDefault := func() (any, error) {
		var v any = map[string]any{}
		if len(def) > 0 {
			if err := json.Unmarshal(def, &v); err != nil {
				return nil, err
			}
		}
		return v, nil
	}
	base, err := decodeDefault()
	if err != nil {
		return nil, err
	}
	doc, _ := decodeDefault() // a copy of its own: MergePatch changes its target
	for _, p := range patches {
		if len(p) == 0 {
			continue
		}
		var pv any
		if err := json.Unmarshal(p, &pv); err != nil {
			return nil, err
		}
		doc = app.MergePatch(doc, pv)
	}
	patch := app.DiffPatch(base, doc)
	if m, ok := patch.(map[string]any); ok && len(m) == 0 {
		return nil, nil
	}
	return json.Marshal(patch)
}

// catalogue is a source read from the store.
type catalogue struct {
	f   *Fleet
	ctx context.Context
}

func (c *catalogue) app(name string) (App, error) {
	r, err := get[App](c.ctx, c.f.st, collApps, name)
	return r.v, err
}

func (c *catalogue) version(a, v string) (Version, error) {
	r, err := get[Version](c.ctx, c.f.st, collVersions, a+"/"+v)
	return r.v, err
}

func (c *catalogue) groups() []groupView                        { return nil }
func (c *catalogue) overrides(string) map[string]ConfigOverride { return nil }
func (c *catalogue) labels(string) map[string]string            { return nil }

// sortedGroups returns groups in name order with their selectors parsed
// (one whose selector does not parse matches nothing, so it is left out).
func sortedGroups(gs map[string]Group) []groupView {
	out := make([]groupView, 0, len(gs))
	for _, name := range sortedKeys(gs) {
		if sel, err := ParseSelector(gs[name].Selector); err == nil {
			out = append(out, groupView{Group: gs[name], sel: sel})
		}
	}
	return out
}
