package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/fleet/store"
)

// leader is the lease holder's view of the whole fleet, loaded from the
// store when it takes the lease and kept by following the store's change
// feed. It alone writes desired documents and targets, each write
// conditional on the version it read, so a holder that lost the lease
// without knowing cannot overwrite its successor's work.
type leader struct {
	f *Fleet

	apps        map[string]App
	versions    map[string]Version // app/version
	groupsByN   map[string]Group
	groupList   []groupView
	configs     map[string]map[string]ConfigOverride // app → scope key
	instances   map[string]Instance
	reports     map[string]Report
	desired     map[string]record[Desired]
	deployments map[string]record[Deployment]
	selectors   map[string]Selector                  // by deployment: parsed once, asked per instance
	targets     map[string]map[string]record[Target] // deployment → instance
	cursors     map[string]uint64

	published map[string]time.Time // instance → when its document last went out
	dirty     map[string]bool      // instances whose document may have changed
}

// followed are the collections others write and the holder follows.
var followed = []string{collApps, collVersions, collGroups, collConfigs, collInstances, collReports, collDeployments}

func loadLeader(ctx context.Context, f *Fleet) (*leader, error) {
	l := &leader{
		f: f, apps: map[string]App{}, versions: map[string]Version{}, groupsByN: map[string]Group{},
		configs: map[string]map[string]ConfigOverride{}, instances: map[string]Instance{}, reports: map[string]Report{},
		desired: map[string]record[Desired]{}, deployments: map[string]record[Deployment]{}, selectors: map[string]Selector{},
		targets: map[string]map[string]record[Target]{}, cursors: map[string]uint64{},
		published: map[string]time.Time{}, dirty: map[string]bool{},
	}
	for _, coll := range append(slices.Clone(followed), collDesired, collTargets) {
		rs, err := f.st.List(ctx, coll, "")
		if err != nil {
			return nil, err
		}
		l.absorb(coll, rs)
	}
	// What the last holder may have written and not published, or the
	// broker lost: every instance not on its desired revision gets it
	// again at the first step.
	return l, nil
}

// absorb takes records of coll into the view.
func (l *leader) absorb(coll string, rs []store.Record) {
	for _, r := range rs {
		l.cursors[coll] = max(l.cursors[coll], r.Version)
	}
	switch coll {
	case collApps:
		for _, r := range decodeAll[App](rs, l.f.bad) {
			l.apps[r.v.Name] = r.v
		}
	case collVersions:
		for _, r := range decodeAll[Version](rs, l.f.bad) {
			l.versions[r.v.App+"/"+r.v.Version.Version] = r.v
		}
	case collGroups:
		for _, r := range decodeAll[Group](rs, l.f.bad) {
			l.groupsByN[r.v.Name] = r.v
		}
		if len(rs) > 0 {
			l.groupList = sortedGroups(l.groupsByN)
			l.dirtyAll() // who is in a group may have changed
		}
	case collConfigs:
		for _, r := range decodeAll[ConfigOverride](rs, l.f.bad) {
			m := l.configs[r.v.App]
			if m == nil {
				m = map[string]ConfigOverride{}
				l.configs[r.v.App] = m
			}
			if r.v.Overrides == nil {
				delete(m, r.v.Scope.key())
			} else {
				m[r.v.Scope.key()] = r.v
			}
			if r.v.Scope.Instance != "" {
				l.dirty[r.v.Scope.Instance] = true
			} else {
				l.dirtyAll()
			}
		}
	case collInstances:
		for _, r := range decodeAll[Instance](rs, l.f.bad) {
			l.instances[r.v.ID] = r.v
			l.dirty[r.v.ID] = true
		}
	case collReports:
		for _, r := range decodeAll[Report](rs, l.f.bad) {
			l.reports[r.v.Instance] = r.v
		}
	case collDesired:
		for _, r := range decodeAll[Desired](rs, l.f.bad) {
			l.desired[r.v.Instance] = r
		}
	case collDeployments:
		for _, r := range decodeAll[Deployment](rs, l.f.bad) {
			l.deployments[r.v.ID] = r
			if sel, err := ParseSelector(r.v.Selector); err == nil {
				l.selectors[r.v.ID] = sel
			}
		}
	case collTargets:
		for _, r := range decodeAll[Target](rs, l.f.bad) {
			m := l.targets[r.v.Deployment]
			if m == nil {
				m = map[string]record[Target]{}
				l.targets[r.v.Deployment] = m
			}
			m[r.v.Instance] = r
		}
	}
}

func (l *leader) dirtyAll() {
	for id := range l.instances {
		l.dirty[id] = true
	}
}

// follow reads what others wrote since the last look.
func (l *leader) follow(ctx context.Context) error {
	const page = 1000
	for _, coll := range followed {
		for {
			rs, err := l.f.st.Changes(ctx, coll, l.cursors[coll], page)
			if err != nil {
				return err
			}
			l.absorb(coll, rs)
			if len(rs) < page {
				break
			}
		}
	}
	return nil
}

// The view as a document source.
func (l *leader) app(name string) (App, error) {
	a, ok := l.apps[name]
	if !ok {
		return App{}, fmt.Errorf("%w: app %s", ErrNotFound, name)
	}
	return a, nil
}

func (l *leader) version(a, v string) (Version, error) {
	ver, ok := l.versions[a+"/"+v]
	if !ok {
		return Version{}, fmt.Errorf("%w: app %s version %s", ErrNotFound, a, v)
	}
	return ver, nil
}

func (l *leader) groups() []groupView                          { return l.groupList }
func (l *leader) overrides(a string) map[string]ConfigOverride { return l.configs[a] }
func (l *leader) labels(id string) map[string]string           { return l.instances[id].Labels }

// change is one step's writes about one instance (its desired document
// and targets) or one deployment, kept together in one Apply so a crash
// never leaves half of it.
type change struct {
	ops     []store.Op
	publish *Desired // to publish once written
	apply   func(version uint64)
}

// plan is a step's work.
type plan struct {
	changes []change
	sent    map[string]bool        // instances given a document in this step
	deps    map[string]*Deployment // deployments changed in this step, as they end it
	planned map[string]bool        // deployments whose targets were made in this step
}

func (p *plan) add(c change) { p.changes = append(p.changes, c) }

// putTarget records t (new or changed) in the plan.
func (l *leader) putTarget(p *plan, t Target) {
	t.Updated = l.f.now().UTC()
	p.add(change{ops: []store.Op{l.targetOp(t)}, apply: func(v uint64) { l.setTarget(t, v) }})
}

// targetOp writes t over the version the view has of it.
func (l *leader) targetOp(t Target) store.Op {
	return store.Replace(collTargets, t.Deployment+"/"+t.Instance, encode(t), l.targets[t.Deployment][t.Instance].version)
}

func (l *leader) setTarget(t Target, v uint64) {
	m := l.targets[t.Deployment]
	if m == nil {
		m = map[string]record[Target]{}
		l.targets[t.Deployment] = m
	}
	m[t.Instance] = record[Target]{v: t, version: v}
}

// putDeployment records d's new state in the plan; the last one of a
// step is written, after the step's other changes (so a crash midway
// repeats the work rather than skipping it).
func (l *leader) putDeployment(p *plan, d Deployment) {
	if p.deps == nil {
		p.deps = map[string]*Deployment{}
	}
	d.Updated = l.f.now().UTC()
	p.deps[d.ID] = &d
}

func (l *leader) deploymentChanges(p *plan) {
	for _, id := range sortedKeys(p.deps) {
		d := *p.deps[id]
		old := l.deployments[d.ID]
		p.add(change{ops: []store.Op{store.Update(collDeployments, d.ID, encode(d), old.version)}, apply: func(v uint64) {
			l.deployments[d.ID] = record[Deployment]{v: d, version: v}
			l.cursors[collDeployments] = max(l.cursors[collDeployments], v)
		}})
	}
}

// send gives instance id the document of deployment d (or, for a
// rollback, of the deployment named by doc), with the target changes that
// go with it, in one change.
func (l *leader) send(ctx context.Context, p *plan, id string, d *Deployment, ts ...Target) error {
	if p.sent[id] {
		return errSentThisStep
	}
	if p.sent == nil {
		p.sent = map[string]bool{}
	}
	p.sent[id] = true
	old := l.desired[id]
	rev := old.v.Revision + 1
	depID, docID := "", "empty" // no deployment: the document of no apps
	var apps []AppVersion
	if d != nil {
		depID, docID, apps = d.ID, d.ID, d.Apps
	}
	doc, err := l.f.document(ctx, l, docID, apps, id, rev)
	if err != nil {
		return fmt.Errorf("instance %s: %w", id, err)
	}
	des := Desired{Instance: id, Revision: rev, Deployment: depID, Document: doc, Updated: l.f.now().UTC()}
	c := change{ops: []store.Op{store.Replace(collDesired, id, encode(des), old.version)}, publish: &des}
	now := l.f.now().UTC()
	for i := range ts {
		ts[i].Updated = now
		c.ops = append(c.ops, l.targetOp(ts[i]))
	}
	c.apply = func(v uint64) {
		l.desired[id] = record[Desired]{v: des, version: v}
		for _, t := range ts {
			l.setTarget(t, v)
		}
	}
	p.add(c)
	// Later changes of this step build on this one.
	l.desired[id] = record[Desired]{v: des, version: old.version}
	return nil
}

// errSentThisStep: the instance has a document from this step already;
// the next step looks again.
var errSentThisStep = errors.New("sent a document in this step already")

// commit writes the plan's changes, in Applies of up to 512 operations,
// then publishes the documents written. A conflict means another writer
// moved (an operator's command, or a holder that lost the lease): the view
// is reloaded before the next step.
func (l *leader) commit(ctx context.Context, p *plan) (reload bool, err error) {
	l.deploymentChanges(p)
	var batch []change
	var ops []store.Op
	var toPublish []*Desired
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		v, err := l.f.st.Apply(ctx, ops...)
		if err != nil {
			return err
		}
		for _, c := range batch {
			if c.apply != nil {
				c.apply(v)
			}
			if c.publish != nil {
				toPublish = append(toPublish, c.publish)
			}
		}
		batch, ops = batch[:0], ops[:0]
		return nil
	}
	for _, c := range p.changes {
		if len(ops)+len(c.ops) > 512 {
			if err := flush(); err != nil {
				break
			}
		}
		batch, ops = append(batch, c), append(ops, c.ops...)
	}
	if err == nil {
		err = flush()
	}
	l.publish(ctx, toPublish)
	if errors.Is(err, store.ErrConflict) {
		return true, nil
	}
	return err != nil, err
}

// publish sends documents, retained, at QoS 1; at most 64 at a time.
func (l *leader) publish(ctx context.Context, docs []*Desired) {
	if len(docs) == 0 {
		return
	}
	var g errgroup.Group
	g.SetLimit(64)
	now := l.f.now()
	for _, d := range docs {
		l.published[d.Instance] = now
		g.Go(func() error {
			err := l.f.bus.Publish(ctx, &bus.Message{Topic: app.DesiredTopic(d.Instance), Payload: d.Document, QoS: bus.AtLeastOnce, Retain: true, ContentType: "application/json"})
			if err != nil && ctx.Err() == nil {
				l.f.log.Warn("fleet: publishing a desired document (it goes again when the instance reports an older revision)", "instance", d.Instance, "revision", d.Revision, "err", err)
			}
			return nil // each document stands alone
		})
	}
	_ = g.Wait()
}
