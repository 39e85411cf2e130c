package fnapi

import "encoding/json"

// A driver function is a continuous function the gateway's device manager
// treats as a device driver (package edge/fndriver). It says hello when it
// starts (DriverHello), and reports its devices' properties, events and
// states with the driver methods below; the gateway asks it to attach,
// update and detach devices and to read, write and call them by invoking
// it with a DriverOp as the event and Source {"type": DriverSource}
// (the Lambda client context's custom), which only the gateway sets. The
// SDKs route those invocations to the driver's callbacks, not to the
// handler.
const (
	// DriverHello tells the gateway the instance serves as a driver, once,
	// when the program registers its callbacks (no arguments). The answer
	// is a DriverHelloAnswer; the gateway then attaches the driver's
	// devices with DriverOps. Every device is offline until attached.
	DriverHello = "driver.hello"
	// DriverReport hands over property values of a device the driver
	// serves (DriverReportArgs), checked against its thing model: the
	// answer is a DriverReportAnswer naming the values refused.
	DriverReport = "driver.report"
	// DriverEvent hands over an event (DriverEventArgs), checked against
	// the thing model; an event that does not fit is refused whole as
	// ErrInvalidValue.
	DriverEvent = "driver.event"
	// DriverState tells a device's link state (DriverStateArgs).
	DriverState = "driver.state"

	// DriverSource is the invocation source type of a DriverOp.
	DriverSource = "edgekit-driver"
)

// DriverHelloAnswer is the driver's configuration, as the gateway's
// deployment gives it ("null" when none), and the devices bound to the
// driver when it said hello (which it is given by attach ops too).
type DriverHelloAnswer struct {
	Config  json.RawMessage `json:"config"`
	Devices []Thing         `json:"devices"`
}

// DriverReportArgs are a driver.report's arguments.
type DriverReportArgs struct {
	Device     string                     `json:"device"`
	Properties map[string]json.RawMessage `json:"properties"`
	// Time is when the values were read, in Unix milliseconds; 0: now.
	Time int64 `json:"time,omitempty"`
}

// DriverReportAnswer names the values the thing model refused (by id, why);
// the others were taken.
type DriverReportAnswer struct {
	Refused map[string]string `json:"refused,omitempty"`
}

// DriverEventArgs are a driver.event's arguments.
type DriverEventArgs struct {
	Device string                     `json:"device"`
	Event  string                     `json:"event"`
	Output map[string]json.RawMessage `json:"output,omitempty"`
	Time   int64                      `json:"time,omitempty"`
}

// DriverStateArgs are a driver.state's arguments.
type DriverStateArgs struct {
	Device string `json:"device"`
	// State is "online", "offline" or "degraded".
	State string `json:"state"`
	// Cause says why a device is not online.
	Cause string `json:"cause,omitempty"`
}

// The operations of a DriverOp.
const (
	OpAttach = "attach" // Thing: a device to serve (or serve again after a restart)
	OpUpdate = "update" // Thing: a new model or config for a device served
	OpDetach = "detach" // Device: serve it no more
	OpGet    = "get"    // Device, Properties: answer a DriverGetAnswer
	OpSet    = "set"    // Device, Values: answer a DriverSetAnswer
	OpCall   = "call"   // Device, Service, Input: answer a DeviceCallAnswer
)

// DriverOp is what the gateway asks of a driver, as an invocation's event.
// A refusal is the invocation's error, whose type is one of the device
// errors (UnknownDevice, UnknownProperty, UnknownService, InvalidValue,
// ReadOnly, Offline) or the driver's own.
type DriverOp struct {
	Op     string `json:"op"`
	Device string `json:"device"`
	Thing  *Thing `json:"thing,omitempty"`
	// Properties are the ids a get reads, every one in the thing model.
	Properties []string `json:"properties,omitempty"`
	// Values are a set's values, already checked against the thing model.
	Values  map[string]json.RawMessage `json:"values,omitempty"`
	Service string                     `json:"service,omitempty"`
	Input   map[string]json.RawMessage `json:"input,omitempty"`
}

// Thing is a device as a driver is given it.
type Thing struct {
	Name string `json:"name"`
	// TSL is the device's thing model as TSL JSON.
	TSL json.RawMessage `json:"tsl"`
	// Config is the driver's own settings for the device (an address).
	Config json.RawMessage   `json:"config,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// DriverGetAnswer is a get's answer: values by id, and why those that
// could not be read were not. An id in neither was not read.
type DriverGetAnswer struct {
	Properties map[string]json.RawMessage `json:"properties"`
	Errors     map[string]*Error          `json:"errors,omitempty"`
}

// DriverSetAnswer is a set's answer: why the values not written were not;
// the others were written.
type DriverSetAnswer struct {
	Errors map[string]*Error `json:"errors,omitempty"`
}
