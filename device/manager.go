package device

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgekit/edgekit/internal/drain"
)

// ManagerOptions configure a Manager. The zero value is usable.
type ManagerOptions struct {
	// Publish receives every validated report, event and state change
	// (the bus adapter publishes them; see docs/TOPICS.md); nil keeps
	// them in the shadow only. It may block (the driver's Report then
	// waits, until its ctx ends).
	Publish func(ctx context.Context, n Notice) error
	// CallTimeout bounds each driver call; default 5 s.
	CallTimeout time.Duration
	// OfflineAfter is how many calls in a row must fail before a device
	// whose driver does not say is taken as offline; default 3.
	OfflineAfter int
	// Logger receives the manager's records; nil discards.
	Logger *slog.Logger
}

// NoticeKind says what a Notice is.
type NoticeKind string

// Notice kinds.
const (
	PropertiesNotice NoticeKind = "properties"
	EventNotice      NoticeKind = "event"
	StateNotice      NoticeKind = "state"
)

// Notice is what the manager tells its consumer: validated property
// values, an event, or a state change.
type Notice struct {
	Kind   NoticeKind
	Device string
	Event  string         // EventNotice
	Values map[string]any // properties, or the event's output
	State  State          // StateNotice
	Cause  string         // StateNotice: why, when not online
	Time   time.Time
}

// PollGroup is a set of properties read together on an interval, for
// drivers that cannot push; only changed values are reported.
type PollGroup struct {
	Properties []string
	Every      time.Duration
}

// ShadowValue is one property in the shadow.
type ShadowValue struct {
	Reported     any
	ReportedAt   time.Time
	Desired      any // set and not yet confirmed by a report
	DesiredSince time.Time
	// Version counts the property's sets; a report that confirms a
	// desired value leaves it, so a consumer can tell which set it saw
	// applied.
	Version uint64
}

// Shadow is what the manager knows of a device.
type Shadow struct {
	Device     string
	State      State
	Cause      string
	Properties map[string]ShadowValue
	Labels     map[string]string
}

// Manager connects drivers to the gateway: it keeps the registry of
// drivers and devices, checks every value against the device's model in
// both directions, keeps a shadow per device, polls, serialises calls per
// device, and tracks online state. A driver that panics, blocks or ignores
// its context delays only its own devices' calls, and only up to their
// timeouts.
type Manager struct {
	opts ManagerOptions
	// calls counts the goroutines driver calls run on; Close waits for
	// them.
	calls sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	drivers map[string]*driverEntry
	devices map[string]*managed
}

type driverEntry struct {
	name string
	drv  Driver
	host *driverHost
}

// managed is one attached device.
type managed struct {
	name   string
	model  atomic.Pointer[Model] // replaced by Update, between the device's calls
	driver *driverEntry
	// turn, capacity 1, is held during each driver call for the device,
	// so they come one at a time (nil: the driver allows them to overlap).
	turn  chan struct{}
	stop  chan struct{} // closed when the device is detached
	polls []*time.Timer // one per poll group; no goroutine while idle

	mu       sync.Mutex
	state    State
	cause    string
	labels   map[string]string
	declared bool // the driver reports the state itself
	failures int  // calls failed in a row
	// downByFailures: failures, not the driver, took the device offline.
	downByFailures bool
	shadow         map[string]ShadowValue
}

// NewManager returns an empty manager.
func NewManager(opts *ManagerOptions) *Manager {
	var o ManagerOptions
	if opts != nil {
		o = *opts
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = 5 * time.Second
	}
	if o.OfflineAfter <= 0 {
		o.OfflineAfter = 3
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{opts: o, drivers: map[string]*driverEntry{}, devices: map[string]*managed{}}
}

// AddDriver opens a driver under a name with its configuration.
func (m *Manager) AddDriver(ctx context.Context, name string, d Driver, config json.RawMessage) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return fmt.Errorf("device: driver %s: %w", name, ErrClosed)
	}
	if _, ok := m.drivers[name]; ok {
		m.mu.Unlock()
		return fmt.Errorf("device: driver %s is added already", name)
	}
	e := &driverEntry{name: name, drv: d}
	e.host = &driverHost{m: m, driver: name, log: m.opts.Logger.With("driver", name)}
	m.drivers[name] = e
	m.mu.Unlock()
	if err := safely(func() error { return d.Open(ctx, config, e.host) }); err != nil {
		m.mu.Lock()
		delete(m.drivers, name)
		m.mu.Unlock()
		return fmt.Errorf("device: opening driver %s: %w", name, err)
	}
	return nil
}

// RemoveDriver detaches the named driver's devices (the driver's Detach
// for each), closes it and forgets it; the name can be added again. Every
// step is bounded by ctx, and the driver is forgotten even when one fails.
func (m *Manager) RemoveDriver(ctx context.Context, name string) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return fmt.Errorf("device: driver %s: %w", name, ErrClosed)
	}
	e, ok := m.drivers[name]
	if !ok {
		m.mu.Unlock()
		return fmt.Errorf("device: driver %q: %w", name, ErrUnknownDriver)
	}
	delete(m.drivers, name) // no Attach reaches it from here
	var ds []*managed
	for _, d := range m.devices {
		if d.driver == e {
			ds = append(ds, d)
		}
	}
	m.mu.Unlock()
	var errs []error
	for _, d := range ds {
		m.remove(d)
		if err := m.callAll(ctx, []*managed{d}, func(ctx context.Context) error { return e.drv.Detach(ctx, d.name) }, true); err != nil {
			errs = append(errs, fmt.Errorf("device %s: detaching: %w", d.name, err))
		}
	}
	if err := closeDriver(ctx, e); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Discover has the named driver look for devices (it must implement
// Discoverer, else ErrNotSupported), calling found, one device at a time,
// for each one not attached, once per name, until ctx ends or the driver has looked
// everywhere. Devices found are not attached: whoever called decides (an
// operator, a provisioning rule), with Attach. A device without a name, or
// with a model that does not check, is logged and left out. The end of ctx
// is the usual end of a discovery and returns nil.
func (m *Manager) Discover(ctx context.Context, driver string, found func(Device)) error {
	m.mu.Lock()
	e, ok := m.drivers[driver]
	closed := m.closed
	m.mu.Unlock()
	switch {
	case closed:
		return fmt.Errorf("device: discover on driver %s: %w", driver, ErrClosed)
	case !ok:
		return fmt.Errorf("device: discover: driver %q: %w", driver, ErrUnknownDriver)
	}
	disc, ok := e.drv.(Discoverer)
	if !ok {
		return fmt.Errorf("device: discover on driver %s: %w", driver, ErrNotSupported)
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	err := safely(func() error {
		return disc.Discover(ctx, func(d Device) {
			if d.Name == "" {
				e.host.log.Warn("device: discovered a device without a name; left out")
				return
			}
			if d.Model != nil {
				if err := d.Model.Check(); err != nil {
					e.host.log.Warn("device: discovered a device whose model does not check; left out", "device", d.Name, "err", err)
					return
				}
			}
			mu.Lock() // found is called one device at a time
			defer mu.Unlock()
			m.mu.Lock()
			_, attached := m.devices[d.Name]
			m.mu.Unlock()
			if !seen[d.Name] && !attached {
				seen[d.Name] = true
				found(d)
			}
		})
	})
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("device: discover on driver %s: %w", driver, err)
	}
	return nil
}

// safely runs f, turning a panic into an error.
func safely(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("driver panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return f()
}

// Attach adds a device served by the named driver, polling the groups.
func (m *Manager) Attach(ctx context.Context, driver string, dev Device, poll []PollGroup) error {
	if err := checkDevice(dev, poll); err != nil {
		return err
	}
	// One look at the registry checks and claims the name, so that two
	// Attach calls cannot both take it, nor one land on a driver being
	// removed.
	m.mu.Lock()
	e, ok := m.drivers[driver]
	_, taken := m.devices[dev.Name]
	closed := m.closed
	var d *managed
	if !closed && ok && !taken {
		d = &managed{name: dev.Name, driver: e, stop: make(chan struct{}), state: Offline, shadow: map[string]ShadowValue{}, labels: maps.Clone(dev.Labels)}
		d.model.Store(dev.Model)
		if cd, ok := e.drv.(ConcurrentDriver); !ok || !cd.ConcurrentCalls() {
			d.turn = make(chan struct{}, 1)
		}
		m.devices[dev.Name] = d
	}
	m.mu.Unlock()
	switch {
	case closed:
		return fmt.Errorf("device %s: %w", dev.Name, ErrClosed)
	case !ok:
		return fmt.Errorf("device %s: driver %q: %w", dev.Name, driver, ErrUnknownDriver)
	case taken:
		return fmt.Errorf("device %s is attached already", dev.Name)
	}
	if err := m.call(ctx, d, func(ctx context.Context) error { return e.drv.Attach(ctx, dev) }); err != nil {
		m.remove(d)
		return fmt.Errorf("device %s: attaching: %w", dev.Name, err)
	}
	m.setPolls(d, poll)
	return nil
}

// checkDevice checks a device's model and poll groups.
func checkDevice(dev Device, poll []PollGroup) error {
	if dev.Model == nil {
		return fmt.Errorf("device %s: %w: no model", dev.Name, ErrInvalidModel)
	}
	if err := dev.Model.Check(); err != nil {
		return fmt.Errorf("device %s: %w", dev.Name, err)
	}
	for i, g := range poll {
		if g.Every <= 0 {
			return fmt.Errorf("device %s: poll[%d].every: %v, want a positive interval", dev.Name, i, g.Every)
		}
		for _, id := range g.Properties {
			if _, ok := dev.Model.Property(id); !ok {
				return fmt.Errorf("device %s: poll[%d]: property %q: %w", dev.Name, i, id, ErrUnknownProperty)
			}
		}
	}
	return nil
}

// setPolls replaces the device's poll groups.
func (m *Manager) setPolls(d *managed, poll []PollGroup) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, t := range d.polls {
		t.Stop()
	}
	d.polls = d.polls[:0]
	select {
	case <-d.stop: // detached meanwhile
		return
	default:
	}
	for _, g := range poll {
		d.polls = append(d.polls, m.schedulePoll(d, g))
	}
}

// Update changes an attached device's model, configuration and poll
// groups: the driver's Update is the device's next call, and the new model
// checks every call after it. Shadow values of properties the new model
// lacks are dropped. When the driver refuses, the device keeps what it had.
func (m *Manager) Update(ctx context.Context, dev Device, poll []PollGroup) error {
	if err := checkDevice(dev, poll); err != nil {
		return err
	}
	d, err := m.device(dev.Name)
	if err != nil {
		return err
	}
	err = m.call(ctx, d, func(ctx context.Context) error {
		if err := d.driver.drv.Update(ctx, dev); err != nil {
			return err
		}
		d.model.Store(dev.Model)
		d.mu.Lock()
		d.labels = maps.Clone(dev.Labels)
		for id := range d.shadow {
			if _, ok := dev.Model.Property(id); !ok {
				delete(d.shadow, id)
			}
		}
		d.mu.Unlock()
		return nil
	})
	if err != nil {
		return fmt.Errorf("device %s: updating: %w", dev.Name, err)
	}
	m.setPolls(d, poll)
	return nil
}

// schedulePoll reads group g every g.Every: a timer, not a goroutine, while
// the device is idle.
func (m *Manager) schedulePoll(d *managed, g PollGroup) *time.Timer {
	var t *time.Timer
	// Made far off, then reset: the function reads t, which is set by then.
	t = time.AfterFunc(time.Hour, func() {
		if !m.spawned(func() { m.poll(d, g.Properties) }) {
			return
		}
		select {
		case <-d.stop:
		default:
			t.Reset(g.Every)
		}
	})
	t.Reset(g.Every)
	return t
}

// spawned runs f counted in m.calls, unless the manager is closed; it
// reports whether f ran.
func (m *Manager) spawned(f func()) bool {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return false
	}
	m.calls.Add(1)
	m.mu.Unlock()
	defer m.calls.Done()
	f()
	return true
}

// Detach removes a device; its driver forgets it.
func (m *Manager) Detach(ctx context.Context, name string) error {
	d, err := m.device(name)
	if err != nil {
		return err
	}
	// The device leaves the manager first: from here no poll or caller
	// takes its turn. The driver's Detach then waits for a call still in
	// flight (it holds the turn) and is the device's last call.
	m.remove(d)
	return m.callAll(ctx, []*managed{d}, func(ctx context.Context) error { return d.driver.drv.Detach(ctx, name) }, true)
}

func (m *Manager) remove(d *managed) {
	m.mu.Lock()
	if m.devices[d.name] == d {
		delete(m.devices, d.name)
	}
	m.mu.Unlock()
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	d.mu.Lock()
	for _, t := range d.polls {
		t.Stop()
	}
	d.mu.Unlock()
}

func (m *Manager) device(name string) (*managed, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("device %s: %w", name, ErrClosed)
	}
	d, ok := m.devices[name]
	if !ok {
		return nil, fmt.Errorf("device %s: %w", name, ErrUnknownDevice)
	}
	return d, nil
}

// poll reads a group and reports the values that changed.
func (m *Manager) poll(d *managed, ids []string) {
	var got map[string]Reading
	err := m.callInline(d, func(ctx context.Context) (err error) {
		got, err = d.driver.drv.ReadProperties(ctx, d.name, ids)
		return err
	})
	if err != nil {
		m.opts.Logger.Warn("device: poll failed", "device", d.name, "err", err)
		return
	}
	_, good := m.checkReadings(d, ids, got)
	changed := map[string]any{}
	d.mu.Lock()
	for id, v := range good {
		if old, ok := d.shadow[id]; !ok || !reflect.DeepEqual(old.Reported, v) {
			changed[id] = v
		}
	}
	d.mu.Unlock()
	if len(changed) > 0 {
		_ = m.report(context.Background(), d, changed, time.Now(), true)
	}
}

// call runs f, one call at a time per device (see managed.turn), bounded
// by CallTimeout and ctx. f runs on a goroutine of its own: a driver call
// that does not return in time keeps the device's turn until it does, but
// the caller gets the timeout.
func (m *Manager) call(ctx context.Context, d *managed, f func(ctx context.Context) error) error {
	return m.callAll(ctx, []*managed{d}, f, false)
}

// callAll is call holding the turns of every device in ds (a batch), taken
// in the order given: callers sort ds by name, so that two batches cannot
// wait on each other. detaching takes the turn of a device that has left
// the manager, for the driver's Detach.
func (m *Manager) callAll(ctx context.Context, ds []*managed, f func(ctx context.Context) error, detaching bool) error {
	ctx, cancel := context.WithTimeout(ctx, m.opts.CallTimeout)
	defer cancel()
	for i, d := range ds {
		if err := d.take(ctx, detaching); err != nil {
			release(ds[:i])
			return err
		}
	}
	result := make(chan error, 1)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		release(ds)
		return fmt.Errorf("device %s: %w", names(ds), ErrClosed)
	}
	m.calls.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.calls.Done()
		defer release(ds)
		result <- m.run(ctx, ds, f)
	}()
	select {
	case err := <-result:
		return err
	case <-ctx.Done():
		return fmt.Errorf("device %s: the driver did not answer: %w", names(ds), ctx.Err())
	}
}

// release gives the devices' turns back.
func release(ds []*managed) {
	for _, d := range ds {
		d.release()
	}
}

// names lists the devices for an error.
func names(ds []*managed) string {
	if len(ds) == 1 {
		return ds[0].name
	}
	var b strings.Builder
	for i, d := range ds {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(d.name)
	}
	return b.String()
}

// callInline is call for the manager's own work (polls, re-applying
// desired values), which no caller waits for: f runs on this goroutine,
// saving call's handoff; a driver that blocks holds up only this device.
func (m *Manager) callInline(d *managed, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), m.opts.CallTimeout)
	defer cancel()
	if err := d.take(ctx, false); err != nil {
		return err
	}
	defer d.release()
	return m.run(ctx, []*managed{d}, f)
}

// take waits for the device's turn. A device that has left the manager
// gives its turn to no call but the driver's Detach (detaching).
func (d *managed) take(ctx context.Context, detaching bool) error {
	gone := fmt.Errorf("device %s: %w", d.name, ErrUnknownDevice)
	stopped := func() bool {
		select {
		case <-d.stop:
			return !detaching
		default:
			return false
		}
	}
	if stopped() { // detached: no call reaches the driver, even a free turn
		return gone
	}
	if d.turn == nil {
		return nil
	}
	stop := d.stop
	if detaching {
		stop = nil
	}
	select {
	case d.turn <- struct{}{}:
		if stopped() { // the turn came free as the device left
			<-d.turn
			return gone
		}
		return nil
	case <-stop:
		return gone
	case <-ctx.Done():
		return fmt.Errorf("device %s: waiting for the device's previous call: %w", d.name, ctx.Err())
	}
}

// release gives the device's turn back.
func (d *managed) release() {
	if d.turn != nil {
		<-d.turn
	}
}

// run calls the driver (recovering a panic) and tracks failures of the
// devices the call was for.
func (m *Manager) run(ctx context.Context, ds []*managed, f func(ctx context.Context) error) error {
	err := safely(func() error { return f(ctx) })
	if ctx.Err() != nil && err == nil {
		err = ctx.Err()
	}
	for _, d := range ds {
		m.track(d, err)
	}
	return err
}

// track counts failed calls: OfflineAfter in a row take a device offline,
// whatever its driver said; a success brings it back online, unless its
// driver said otherwise and no failures had taken it down.
func (m *Manager) track(d *managed, err error) {
	if errors.Is(err, ErrUnknownProperty) || errors.Is(err, ErrReadOnly) || errors.Is(err, ErrUnknownService) {
		return // the request was wrong, not the device
	}
	d.mu.Lock()
	state, cause := d.state, d.cause
	if err == nil {
		d.failures = 0
		if !d.declared || d.downByFailures {
			state, cause, d.downByFailures = Online, "", false
		}
	} else if d.failures++; d.failures >= m.opts.OfflineAfter && state != Offline {
		state, cause, d.downByFailures = Offline, err.Error(), true
	}
	d.mu.Unlock()
	m.setState(d, state, cause, false)
}

// setState records a state change and tells the consumer; declared marks
// the driver as reporting state itself. Going online applies desired
// values not yet confirmed.
func (m *Manager) setState(d *managed, s State, cause string, declared bool) {
	d.mu.Lock()
	if declared {
		d.declared, d.downByFailures = true, false
	}
	changed := d.state != s || d.cause != cause
	d.state, d.cause = s, cause
	d.mu.Unlock()
	if !changed {
		return
	}
	if m.opts.Publish != nil {
		_ = m.opts.Publish(context.Background(), Notice{Kind: StateNotice, Device: d.name, State: s, Cause: cause, Time: time.Now()})
	}
	if s == Online {
		m.mu.Lock()
		closed := m.closed
		if !closed {
			m.calls.Add(1)
		}
		m.mu.Unlock()
		if !closed {
			go func() {
				defer m.calls.Done()
				m.reapply(d)
			}()
		}
	}
}

// reapply writes the desired values not yet confirmed.
func (m *Manager) reapply(d *managed) {
	d.mu.Lock()
	pending := map[string]any{}
	for id, v := range d.shadow {
		if v.Desired != nil {
			pending[id] = v.Desired
		}
	}
	d.mu.Unlock()
	if len(pending) == 0 {
		return
	}
	if _, err := m.write(context.Background(), d, pending); err != nil {
		m.opts.Logger.Warn("device: re-applying desired values", "device", d.name, "err", err)
	}
}

// report validates values a driver reported, records them in the shadow
// and tells the consumer. Values that do not fit the model are dropped and
// logged; the rest go on.
func (m *Manager) report(ctx context.Context, d *managed, values map[string]any, at time.Time, validated bool) error {
	good := make(map[string]any, len(values))
	model := d.model.Load()
	for id, v := range values {
		if !validated {
			c, err := model.PropertyValue(id, v)
			if err != nil {
				m.opts.Logger.Warn("device: report refused", "device", d.name, "err", err)
				continue
			}
			v = c
		} else if _, ok := model.Property(id); !ok {
			continue // checked against a model an Update has since replaced
		}
		good[id] = v
	}
	if len(good) == 0 {
		return nil
	}
	d.mu.Lock()
	for id, v := range good {
		sv := d.shadow[id]
		sv.Reported, sv.ReportedAt = v, at
		if sv.Desired != nil && reflect.DeepEqual(sv.Desired, v) {
			sv.Desired, sv.DesiredSince = nil, time.Time{}
		}
		d.shadow[id] = sv
	}
	d.mu.Unlock()
	if m.opts.Publish != nil {
		return m.opts.Publish(ctx, Notice{Kind: PropertiesNotice, Device: d.name, Values: good, Time: at})
	}
	return nil
}

// Get reads properties from the device (all of them when ids is empty),
// checks them against the model and records them.
func (m *Manager) Get(ctx context.Context, device string, ids []string) (map[string]Reading, error) {
	d, err := m.device(device)
	if err != nil {
		return nil, err
	}
	out, ask := askable(d, ids)
	if len(ask) == 0 {
		return out, nil
	}
	var got map[string]Reading
	err = m.call(ctx, d, func(ctx context.Context) (err error) {
		got, err = d.driver.drv.ReadProperties(ctx, device, ask)
		return err
	})
	if err != nil {
		return nil, err
	}
	maps.Copy(out, m.accept(ctx, d, ask, got))
	return out, nil
}

// askable splits the properties ids of a request (all of them when it
// names none) into those to ask the driver for and readings refusing
// those the model lacks.
func askable(d *managed, ids []string) (refused map[string]Reading, ask []string) {
	if len(ids) == 0 {
		for _, p := range d.model.Load().Properties {
			ids = append(ids, p.Identifier)
		}
	}
	refused = make(map[string]Reading, len(ids))
	for _, id := range ids {
		if _, ok := d.model.Load().Property(id); !ok {
			refused[id] = Reading{Err: fmt.Errorf("device %s: properties.%s: %w", d.name, id, ErrUnknownProperty)}
			continue
		}
		ask = append(ask, id)
	}
	return refused, ask
}

// accept checks what the driver read and records the good values.
func (m *Manager) accept(ctx context.Context, d *managed, ask []string, got map[string]Reading) map[string]Reading {
	checked, fresh := m.checkReadings(d, ask, got)
	if len(fresh) > 0 {
		_ = m.report(ctx, d, fresh, time.Now(), true)
	}
	return checked
}

// GetMany reads properties from several devices, as Get does for each (a
// device given no ids: all its properties): the devices of a driver that
// implements BatchReader in one ReadBatch, holding all their turns, the
// others device by device, concurrently. A device that could not be read
// has the reason in each of its readings. An unknown device is refused
// before anything is read.
func (m *Manager) GetMany(ctx context.Context, reads map[string][]string) (map[string]map[string]Reading, error) {
	type request struct {
		d   *managed
		ask []string
		out map[string]Reading
	}
	byDriver := map[*driverEntry][]*request{}
	var all []*request
	for _, name := range slices.Sorted(maps.Keys(reads)) {
		d, err := m.device(name)
		if err != nil {
			return nil, err
		}
		r := &request{d: d}
		r.out, r.ask = askable(d, reads[name])
		all = append(all, r)
		if len(r.ask) > 0 {
			byDriver[d.driver] = append(byDriver[d.driver], r)
		}
	}
	fail := func(r *request, err error) {
		for _, id := range r.ask {
			r.out[id] = Reading{Err: err}
		}
	}
	var wg sync.WaitGroup
	for e, rs := range byDriver {
		if br, ok := e.drv.(BatchReader); ok && len(rs) > 1 {
			wg.Go(func() {
				ds := make([]*managed, len(rs))
				batch := make(map[string][]string, len(rs))
				for i, r := range rs {
					ds[i], batch[r.d.name] = r.d, r.ask
				}
				var got map[string]map[string]Reading
				err := m.callAll(ctx, ds, func(ctx context.Context) (err error) {
					got, err = br.ReadBatch(ctx, batch)
					return err
				}, false)
				for _, r := range rs {
					if err != nil {
						fail(r, err)
					} else {
						maps.Copy(r.out, m.accept(ctx, r.d, r.ask, got[r.d.name]))
					}
				}
			})
			continue
		}
		for _, r := range rs {
			wg.Go(func() {
				got, err := m.Get(ctx, r.d.name, r.ask)
				if err != nil {
					fail(r, err)
					return
				}
				maps.Copy(r.out, got)
			})
		}
	}
	wg.Wait()
	out := make(map[string]map[string]Reading, len(all))
	for _, r := range all {
		out[r.d.name] = r.out
	}
	return out, nil
}

// checkReadings checks what the driver read for ids against the model: a
// reading per id, its value in the model's type, or an error for a value
// outside the model (logged) or none given; and the good values.
func (m *Manager) checkReadings(d *managed, ids []string, got map[string]Reading) (map[string]Reading, map[string]any) {
	out := make(map[string]Reading, len(ids))
	good := make(map[string]any, len(ids))
	for _, id := range ids {
		r, ok := got[id]
		if !ok {
			r = Reading{Err: fmt.Errorf("device %s: properties.%s: the driver gave no result", d.name, id)}
		} else if r.Err == nil {
			v, err := d.model.Load().PropertyValue(id, r.Value)
			if err != nil {
				r = Reading{Err: fmt.Errorf("device %s: the driver read a value outside the model: %w", d.name, err)}
				m.opts.Logger.Warn("device: reading refused", "device", d.name, "err", err)
			} else {
				r.Value = v
				if r.Time.IsZero() {
					r.Time = time.Now()
				}
				good[id] = v
			}
		}
		out[id] = r
	}
	return out, good
}

// Set checks values against the model (writable, in range), records them
// as desired and writes them: one result per property. A device that is
// offline gets them when it comes back online.
func (m *Manager) Set(ctx context.Context, device string, values map[string]any) (map[string]error, error) {
	d, err := m.device(device)
	if err != nil {
		return nil, err
	}
	checked := make(map[string]any, len(values))
	for _, id := range slices.Sorted(maps.Keys(values)) {
		p, ok := d.model.Load().Property(id)
		if !ok {
			return nil, fmt.Errorf("device %s: properties.%s: %w", device, id, ErrUnknownProperty)
		}
		if p.Access != ReadWrite {
			return nil, fmt.Errorf("device %s: properties.%s: %w", device, id, ErrReadOnly)
		}
		v, err := p.Type.Value("properties."+id, values[id])
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", device, err)
		}
		checked[id] = v
	}
	now := time.Now()
	d.mu.Lock()
	for id, v := range checked {
		sv := d.shadow[id]
		sv.Desired, sv.DesiredSince = v, now
		sv.Version++
		d.shadow[id] = sv
	}
	offline := d.state == Offline && d.declared
	d.mu.Unlock()
	if offline {
		return nil, fmt.Errorf("device %s: %w: the values are kept and written when it is back", device, ErrOffline)
	}
	return m.write(ctx, d, checked)
}

// write writes checked values and, where they took, records them as
// reported.
func (m *Manager) write(ctx context.Context, d *managed, values map[string]any) (map[string]error, error) {
	var res map[string]error
	err := m.call(ctx, d, func(ctx context.Context) (err error) {
		res, err = d.driver.drv.WriteProperties(ctx, d.name, values)
		return err
	})
	if err != nil {
		return nil, err
	}
	return m.confirm(ctx, d, values, res), nil
}

// confirm records the values the driver wrote as reported, and completes
// res with a result for each value.
func (m *Manager) confirm(ctx context.Context, d *managed, values map[string]any, res map[string]error) map[string]error {
	if res == nil {
		res = map[string]error{}
	}
	written := map[string]any{}
	for id, v := range values {
		if e, ok := res[id]; ok && e == nil {
			written[id] = v
		} else if !ok {
			res[id] = fmt.Errorf("device %s: properties.%s: the driver gave no result", d.name, id)
		}
	}
	if len(written) > 0 {
		_ = m.report(ctx, d, written, time.Now(), true)
	}
	return res
}

// Call calls a service with input checked against the model, and checks
// its output.
func (m *Manager) Call(ctx context.Context, device, service string, in map[string]any) (map[string]any, error) {
	d, err := m.device(device)
	if err != nil {
		return nil, err
	}
	if _, ok := d.model.Load().Service(service); !ok {
		return nil, fmt.Errorf("device %s: services.%s: %w", device, service, ErrUnknownService)
	}
	checked, err := d.model.Load().ServiceInput(service, in)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", device, err)
	}
	var out map[string]any
	err = m.call(ctx, d, func(ctx context.Context) (err error) {
		out, err = d.driver.drv.CallService(ctx, device, service, checked)
		return err
	})
	if err != nil {
		return nil, err
	}
	if out, err = d.model.Load().ServiceOutput(service, out); err != nil {
		return nil, fmt.Errorf("device %s: the driver answered outside the model: %w", device, err)
	}
	return out, nil
}

// Shadow returns what the manager knows of a device.
func (m *Manager) Shadow(device string) (Shadow, error) {
	d, err := m.device(device)
	if err != nil {
		return Shadow{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return Shadow{Device: device, State: d.state, Cause: d.cause, Properties: maps.Clone(d.shadow), Labels: maps.Clone(d.labels)}, nil
}

// Devices lists the attached devices' names.
func (m *Manager) Devices() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.devices))
}

// Close stops polling and closes every driver (each bounded by ctx). It
// is safe to call twice.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	devices := slices.Collect(maps.Values(m.devices))
	drivers := slices.Collect(maps.Values(m.drivers))
	m.mu.Unlock()
	var errs []error
	for _, d := range devices {
		m.remove(d)
	}
	if err := drain.Wait(ctx, &m.calls, func() {}); err != nil {
		errs = append(errs, fmt.Errorf("device: a driver call did not return: %w", err))
	}
	for _, e := range drivers {
		if err := closeDriver(ctx, e); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// closeDriver stops the driver's reports and closes it, returning by ctx's
// end even when the driver's Close does not.
func closeDriver(ctx context.Context, e *driverEntry) error {
	e.host.close()
	done := make(chan error, 1)
	go func() { done <- safely(func() error { return e.drv.Close(ctx) }) }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("device: closing driver %s: %w", e.name, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("device: closing driver %s: %w", e.name, ctx.Err())
	}
}

// driverHost is the Host one driver reports to.
type driverHost struct {
	m      *Manager
	driver string
	log    *slog.Logger

	mu     sync.Mutex
	closed bool
}

func (h *driverHost) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
}

// managed returns the device if this host's driver serves it.
func (h *driverHost) managed(device string) (*managed, error) {
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("device: driver %s: %w", h.driver, ErrClosed)
	}
	d, err := h.m.device(device)
	if err != nil {
		return nil, err
	}
	if d.driver.name != h.driver {
		return nil, fmt.Errorf("device %s is not the driver %s's: %w", device, h.driver, ErrUnknownDevice)
	}
	return d, nil
}

func (h *driverHost) Report(ctx context.Context, device string, values map[string]any, at time.Time) error {
	d, err := h.managed(device)
	if err != nil {
		return err
	}
	return h.m.report(ctx, d, values, at, false)
}

func (h *driverHost) Emit(ctx context.Context, device, event string, out map[string]any, at time.Time) error {
	d, err := h.managed(device)
	if err != nil {
		return err
	}
	checked, err := d.model.Load().EventOutput(event, out)
	if err != nil {
		h.log.Warn("device: event refused", "device", device, "err", err)
		return err
	}
	if h.m.opts.Publish == nil {
		return nil
	}
	return h.m.opts.Publish(ctx, Notice{Kind: EventNotice, Device: device, Event: event, Values: checked, Time: at})
}

func (h *driverHost) SetState(device string, s State, cause error) {
	d, err := h.managed(device)
	if err != nil {
		return
	}
	why := ""
	if cause != nil {
		why = cause.Error()
	}
	h.m.setState(d, s, why, true)
}

func (h *driverHost) Logger() *slog.Logger { return h.log }
