package device

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"
)

// Errors drivers return and callers branch on, wrapped with the device,
// property or service concerned.
var (
	// ErrUnknownDevice: the driver has no device of that name attached.
	ErrUnknownDevice = errors.New("unknown device")
	// ErrUnknownProperty: the device's model has no such property, or the
	// driver cannot reach it.
	ErrUnknownProperty = errors.New("unknown property")
	// ErrUnknownService: the device's model has no such service.
	ErrUnknownService = errors.New("unknown service")
	// ErrReadOnly: a write to a property whose access is r.
	ErrReadOnly = errors.New("property is read-only")
	// ErrOffline: the device cannot be reached now.
	ErrOffline = errors.New("device offline")
	// ErrClosed: the driver (or the host) is closed.
	ErrClosed = errors.New("closed")
	// ErrUnknownDriver: the Manager has no driver of that name.
	ErrUnknownDriver = errors.New("unknown driver")
	// ErrNotSupported: the driver does not implement the optional
	// interface a call needs (Discoverer). It is errors.ErrUnsupported.
	ErrNotSupported = errors.ErrUnsupported
)

// Device is one device a driver serves: a name unique in the gateway, its
// thing model, and the driver's own settings for it (an address, a
// register map).
type Device struct {
	Name   string
	Model  *Model
	Config json.RawMessage
	// Labels are what functions find devices by (their tags): the manager
	// keeps them, drivers need not look.
	Labels map[string]string
}

// Reading is one property's value as read, or why it could not be.
type Reading struct {
	Value any // in the property's canonical Go type (DataType.Value)
	Time  time.Time
	Err   error
}

// Driver is what a driver developer implements to connect a kind of
// device. Every call takes a context and must return when it ends. Calls
// for one device come one at a time unless the driver implements
// ConcurrentDriver; calls for different devices may overlap, so a driver
// is safe for concurrent use.
type Driver interface {
	// Open starts the driver with its configuration and the Host it
	// reports to. It is called once, before anything else.
	Open(ctx context.Context, config json.RawMessage, host Host) error
	// Attach adds a device; Update changes one (a new model or config);
	// Detach removes one. After Detach the driver reports nothing more
	// for it.
	Attach(ctx context.Context, d Device) error
	Update(ctx context.Context, d Device) error
	Detach(ctx context.Context, name string) error
	// ReadProperties reads the properties ids of a device: one Reading
	// per id, because some may fail while others succeed. An error is
	// returned when nothing could be read (ErrUnknownDevice, ErrOffline,
	// ctx's error).
	ReadProperties(ctx context.Context, device string, ids []string) (map[string]Reading, error)
	// WriteProperties writes values, already checked against the model:
	// one result per property (nil: written). An error is returned when
	// nothing could be written.
	WriteProperties(ctx context.Context, device string, values map[string]any) (map[string]error, error)
	// CallService calls a service with checked input and returns its
	// output.
	CallService(ctx context.Context, device, service string, in map[string]any) (map[string]any, error)
	// Close stops the driver: it reports nothing more once Close has
	// returned. It is safe to call twice.
	Close(ctx context.Context) error
}

// ConcurrentDriver is implemented by a driver whose calls for one device
// may overlap; the Manager then does not serialise them.
type ConcurrentDriver interface {
	Driver
	ConcurrentCalls() bool
}

// Discoverer is implemented by a driver that can find devices: Discover
// calls found for each until ctx ends or it has looked everywhere, then
// returns. A device found carries what the driver knows: a name and its
// config, and its model when the driver can tell. Manager.Discover calls
// it.
type Discoverer interface {
	Driver
	Discover(ctx context.Context, found func(Device)) error
}

// BatchReader is implemented by a driver that reads several devices in one
// exchange (devices behind one endpoint, say); Manager.GetMany calls it,
// holding each device's turn. ReadBatch answers one map of readings per
// device asked, as ReadProperties does; a device it could not read has
// the reason in each of its readings (ErrUnknownDevice, ErrOffline). An
// error is returned when nothing could be read.
type BatchReader interface {
	Driver
	ReadBatch(ctx context.Context, reads map[string][]string) (map[string]map[string]Reading, error)
}

// State is a device's link state.
type State string

// States.
const (
	Online   State = "online"
	Offline  State = "offline"
	Degraded State = "degraded" // reachable, but not all is well (the cause says what)
)

// Host is what a driver calls back. Its methods are safe for concurrent
// use. After the driver's Close they return ErrClosed.
type Host interface {
	// Report hands over property values a device pushed or a driver
	// polled by itself. The host checks them against the model.
	// It may block while the consumer is slow, until ctx ends.
	Report(ctx context.Context, device string, values map[string]any, at time.Time) error
	// Emit hands over an event with its output parameters.
	Emit(ctx context.Context, device, event string, out map[string]any, at time.Time) error
	// SetState tells the device's link state; cause says why (nil when
	// online).
	SetState(device string, state State, cause error)
	// Logger is the driver's logger.
	Logger() *slog.Logger
}
