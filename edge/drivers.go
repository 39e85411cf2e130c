package edge

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/fndriver"
	"github.com/edgekit/edgekit/edge/reconcile"
)

// driverApps binds the devices deployments give driver apps to the device
// manager: each driver app is a driver there under its own name, served by
// its function (package edge/fndriver). It is the reconciler's Drivers.
type driverApps struct {
	devices *device.Manager
	set     *fndriver.Set

	mu    sync.Mutex
	bound map[string]map[string]app.Device // by app, then device
}

var _ reconcile.Drivers = (*driverApps)(nil)

func newDriverApps(m *device.Manager, set *fndriver.Set) *driverApps {
	return &driverApps{devices: m, set: set, bound: map[string]map[string]app.Device{}}
}

// Check parses every device's thing model.
func (b *driverApps) Check(drivers []reconcile.Driver) error {
	for _, d := range drivers {
		for _, dev := range d.Devices {
			if _, err := device.ParseTSL(dev.TSL); err != nil {
				return fmt.Errorf("driver app %s: device %s: %w", d.Function, dev.Name, err)
			}
		}
	}
	return nil
}

// Apply makes drivers what the manager serves: driver apps not named are
// removed with their devices, and each named one gets its devices
// attached, updated where they changed, and detached where they went.
func (b *driverApps) Apply(ctx context.Context, drivers []reconcile.Driver) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for _, fn := range slices.Sorted(maps.Keys(b.bound)) {
		if !slices.ContainsFunc(drivers, func(d reconcile.Driver) bool { return d.Function == fn }) {
			if err := b.devices.RemoveDriver(ctx, fn); err != nil && !errors.Is(err, device.ErrUnknownDriver) {
				errs = append(errs, fmt.Errorf("driver app %s: %w", fn, err))
			}
			delete(b.bound, fn)
		}
	}
	for _, d := range drivers {
		if err := b.apply(ctx, d); err != nil {
			errs = append(errs, fmt.Errorf("driver app %s: %w", d.Function, err))
		}
	}
	return errors.Join(errs...)
}

func (b *driverApps) apply(ctx context.Context, d reconcile.Driver) error {
	bound, ok := b.bound[d.Function]
	if !ok {
		if err := b.devices.AddDriver(ctx, d.Function, b.set.Driver(d.Function), nil); err != nil {
			return err
		}
		bound = map[string]app.Device{}
		b.bound[d.Function] = bound
	}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(bound)) {
		if !slices.ContainsFunc(d.Devices, func(dev app.Device) bool { return dev.Name == name }) {
			if err := b.devices.Detach(ctx, name); err != nil && !errors.Is(err, device.ErrUnknownDevice) {
				errs = append(errs, fmt.Errorf("device %s: %w", name, err))
			}
			delete(bound, name)
		}
	}
	for _, dev := range d.Devices {
		old, had := bound[dev.Name]
		if had && reflect.DeepEqual(old, dev) {
			continue
		}
		model, err := device.ParseTSL(dev.TSL)
		if err != nil {
			errs = append(errs, fmt.Errorf("device %s: %w", dev.Name, err))
			continue
		}
		dd := device.Device{Name: dev.Name, Model: model, Config: dev.Config, Labels: dev.Labels}
		if had {
			err = b.devices.Update(ctx, dd, nil)
		} else {
			err = b.devices.Attach(ctx, d.Function, dd, nil)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("device %s: %w", dev.Name, err))
			continue
		}
		bound[dev.Name] = dev
	}
	return errors.Join(errs...)
}
