// Package modbus is a Modbus TCP device driver on
// github.com/simonvetter/modbus. Each device maps its model's properties to
// registers of one endpoint and unit id; devices behind the same endpoint
// share one connection, used by one request at a time. A lost connection
// marks the endpoint's devices offline, calls then fail at once, and the
// driver reconnects with backoff, marking them online again.
//
// Device config (device.Device.Config):
//
//	{
//	  "endpoint": "tcp://192.0.2.10:502",
//	  "unit": 1,
//	  "timeout": "1s",
//	  "properties": {
//	    "temperature": {"table": "input", "address": 0, "type": "int16", "scale": 0.1},
//	    "setpoint":    {"table": "holding", "address": 10, "type": "uint16"},
//	    "energy":      {"table": "input", "address": 20, "type": "float32", "word_order": "little"},
//	    "pump":        {"table": "coil", "address": 0},
//	    "alarm":       {"table": "holding", "address": 30, "bit": 3}
//	  },
//	  "services": {
//	    "setSchedule": {"address": 100, "inputs": ["start", "end"]}
//	  }
//	}
//
// Tables: holding and input registers, coil and discrete (inputs). Types:
// uint16, int16, uint32, int32, float32, float64 (default uint16); word
// order big (high word first, default) or little, byte order big (default)
// or little within each register; value = raw × scale + offset (scale
// default 1). A "bit" reads and writes one bit of a register. Input
// registers and discrete inputs are read-only. A service writes its input
// parameters, in the order given, to consecutive holding registers from
// its address (one uint16 each) in one request: a multi-register command.
package modbus

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"strings"
	"sync"
	"time"

	mb "github.com/simonvetter/modbus"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/internal/backoff"
)

// Register is where one property lives.
type Register struct {
	Table     string  `json:"table"`
	Address   uint16  `json:"address"`
	Type      string  `json:"type,omitempty"`
	WordOrder string  `json:"word_order,omitempty"`
	ByteOrder string  `json:"byte_order,omitempty"`
	Scale     float64 `json:"scale,omitempty"`
	Offset    float64 `json:"offset,omitempty"`
	Bit       *uint8  `json:"bit,omitempty"`
}

// Command is a service: its input parameters written to consecutive
// holding registers from Address.
type Command struct {
	Address uint16   `json:"address"`
	Inputs  []string `json:"inputs"`
}

// Config is a device's configuration (see the package doc).
type Config struct {
	Endpoint   string              `json:"endpoint"`
	Unit       uint8               `json:"unit"`
	Timeout    string              `json:"timeout,omitempty"`
	Properties map[string]Register `json:"properties"`
	Services   map[string]Command  `json:"services,omitempty"`
}

// words is how many registers a type spans.
var words = map[string]int{"uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "float32": 2, "float64": 4}

// check validates a register map against the model.
func (c *Config) check(dev device.Device) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("modbus: device %s: config.%s", dev.Name, fmt.Sprintf(format, args...))
	}
	if !strings.HasPrefix(c.Endpoint, "tcp://") {
		return bad("endpoint: %q, want tcp://host:port", c.Endpoint)
	}
	for id, r := range c.Properties {
		p, ok := dev.Model.Property(id)
		if !ok {
			return bad("properties.%s: %v", id, device.ErrUnknownProperty)
		}
		switch r.Table {
		case "holding", "input":
			if r.Type == "" {
				r.Type = "uint16"
			}
			if _, ok := words[r.Type]; !ok {
				return bad("properties.%s.type: %q, want uint16, int16, uint32, int32, float32 or float64", id, r.Type)
			}
			if r.Bit != nil && (*r.Bit > 15 || r.Type != "uint16") {
				return bad("properties.%s.bit: a bit 0 to 15 of a uint16 register", id)
			}
			if r.Bit == nil && p.Type.Kind != device.Int && p.Type.Kind != device.Float && p.Type.Kind != device.Double && p.Type.Kind != device.Enum {
				return bad("properties.%s: a register holds a number, the model says %s", id, p.Type.Kind)
			}
		case "coil", "discrete":
			if p.Type.Kind != device.Bool {
				return bad("properties.%s: a %s holds a bool, the model says %s", id, r.Table, p.Type.Kind)
			}
		default:
			return bad("properties.%s.table: %q, want holding, input, coil or discrete", id, r.Table)
		}
		if r.WordOrder != "" && r.WordOrder != "big" && r.WordOrder != "little" {
			return bad("properties.%s.word_order: %q, want big or little", id, r.WordOrder)
		}
		if r.ByteOrder != "" && r.ByteOrder != "big" && r.ByteOrder != "little" {
			return bad("properties.%s.byte_order: %q, want big or little", id, r.ByteOrder)
		}
		if (r.Table == "input" || r.Table == "discrete") && p.Access == device.ReadWrite {
			return bad("properties.%s: %s is read-only, the model says rw", id, r.Table)
		}
		r.Type = cmpOr(r.Type, "uint16")
		if r.Scale == 0 {
			r.Scale = 1
		}
		c.Properties[id] = r
	}
	for id, cmd := range c.Services {
		svc, ok := dev.Model.Service(id)
		if !ok {
			return bad("services.%s: %v", id, device.ErrUnknownService)
		}
		if len(cmd.Inputs) == 0 {
			return bad("services.%s.inputs: none", id)
		}
		for _, in := range cmd.Inputs {
			var param *device.Param
			for i := range svc.Input {
				if svc.Input[i].Identifier == in {
					param = &svc.Input[i]
				}
			}
			if param == nil {
				return bad("services.%s.inputs: %q is not an input of the service", id, in)
			}
			if k := param.Type.Kind; k != device.Int && k != device.Enum && k != device.Bool {
				return bad("services.%s.inputs: %q is %s; a register takes an int, enum or bool", id, in, k)
			}
		}
	}
	return nil
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Driver is the Modbus TCP driver.
type Driver struct {
	mu        sync.Mutex
	host      device.Host
	closed    bool
	endpoints map[string]*endpoint
	devices   map[string]*mdev
}

type mdev struct {
	dev device.Device
	cfg Config
	ep  *endpoint
}

// New returns a Modbus TCP driver.
func New() *Driver {
	return &Driver{endpoints: map[string]*endpoint{}, devices: map[string]*mdev{}}
}

// Open records the host; the driver has no configuration of its own.
func (d *Driver) Open(_ context.Context, _ json.RawMessage, host device.Host) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.host = host
	return nil
}

func parse(dev device.Device) (Config, time.Duration, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(dev.Config))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, 0, fmt.Errorf("modbus: device %s: config: %w", dev.Name, err)
	}
	timeout := time.Second
	if c.Timeout != "" {
		t, err := time.ParseDuration(c.Timeout)
		if err != nil || t <= 0 {
			return c, 0, fmt.Errorf("modbus: device %s: config.timeout: %q is not a duration", dev.Name, c.Timeout)
		}
		timeout = t
	}
	if c.Properties == nil {
		c.Properties = map[string]Register{}
	}
	return c, timeout, c.check(dev)
}

// Attach adds a device, connecting to its endpoint if no other device has.
func (d *Driver) Attach(_ context.Context, dev device.Device) error {
	cfg, timeout, err := parse(dev)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("modbus: attach %s: %w", dev.Name, device.ErrClosed)
	}
	if _, ok := d.devices[dev.Name]; ok {
		return fmt.Errorf("modbus: device %s is attached already", dev.Name)
	}
	ep := d.endpoints[cfg.Endpoint]
	if ep == nil {
		if ep, err = newEndpoint(cfg.Endpoint, timeout, d.host); err != nil {
			return fmt.Errorf("modbus: device %s: %w", dev.Name, err)
		}
		d.endpoints[cfg.Endpoint] = ep
	}
	md := &mdev{dev: dev, cfg: cfg, ep: ep}
	d.devices[dev.Name] = md
	ep.add(dev.Name)
	return nil
}

// Update replaces a device's model and config.
func (d *Driver) Update(ctx context.Context, dev device.Device) error {
	if _, _, err := parse(dev); err != nil {
		return err
	}
	if err := d.Detach(ctx, dev.Name); err != nil {
		return err
	}
	return d.Attach(ctx, dev)
}

// Detach removes a device; an endpoint no device uses is closed.
func (d *Driver) Detach(_ context.Context, name string) error {
	d.mu.Lock()
	md, ok := d.devices[name]
	if !ok {
		d.mu.Unlock()
		return fmt.Errorf("modbus: detach %s: %w", name, device.ErrUnknownDevice)
	}
	delete(d.devices, name)
	var idle *endpoint
	if md.ep.remove(name) == 0 {
		delete(d.endpoints, md.cfg.Endpoint)
		idle = md.ep
	}
	d.mu.Unlock()
	if idle != nil {
		idle.close()
	}
	return nil
}

func (d *Driver) device(name string) (*mdev, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("modbus: %w", device.ErrClosed)
	}
	md, ok := d.devices[name]
	if !ok {
		return nil, fmt.Errorf("modbus: device %s: %w", name, device.ErrUnknownDevice)
	}
	return md, nil
}

// ReadProperties reads each property's registers.
func (d *Driver) ReadProperties(ctx context.Context, name string, ids []string) (map[string]device.Reading, error) {
	md, err := d.device(name)
	if err != nil {
		return nil, err
	}
	out := make(map[string]device.Reading, len(ids))
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r, ok := md.cfg.Properties[id]
		if !ok {
			out[id] = device.Reading{Err: fmt.Errorf("modbus: %s.%s: no register mapped: %w", name, id, device.ErrUnknownProperty)}
			continue
		}
		p, _ := md.dev.Model.Property(id)
		v, err := md.ep.read(ctx, md.cfg.Unit, r, p.Type.Kind)
		if errors.Is(err, device.ErrOffline) {
			return nil, fmt.Errorf("modbus: device %s: %w", name, err)
		}
		if err != nil {
			out[id] = device.Reading{Err: fmt.Errorf("modbus: %s.%s: %w", name, id, err)}
			continue
		}
		out[id] = device.Reading{Value: v, Time: time.Now()}
	}
	return out, nil
}

// WriteProperties writes holding registers and coils.
func (d *Driver) WriteProperties(ctx context.Context, name string, values map[string]any) (map[string]error, error) {
	md, err := d.device(name)
	if err != nil {
		return nil, err
	}
	out := make(map[string]error, len(values))
	for id, v := range values {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r, ok := md.cfg.Properties[id]
		p, inModel := md.dev.Model.Property(id)
		switch {
		case !ok || !inModel:
			out[id] = fmt.Errorf("modbus: %s.%s: no register mapped: %w", name, id, device.ErrUnknownProperty)
			continue
		case r.Table == "input" || r.Table == "discrete" || p.Access != device.ReadWrite:
			out[id] = fmt.Errorf("modbus: %s.%s: %w", name, id, device.ErrReadOnly)
			continue
		}
		err := md.ep.write(ctx, md.cfg.Unit, r, v)
		if errors.Is(err, device.ErrOffline) {
			return nil, fmt.Errorf("modbus: device %s: %w", name, err)
		}
		out[id] = err
	}
	return out, nil
}

// CallService writes a declared command's inputs in one request; it
// answers no output.
func (d *Driver) CallService(ctx context.Context, name, service string, in map[string]any) (map[string]any, error) {
	md, err := d.device(name)
	if err != nil {
		return nil, err
	}
	cmd, ok := md.cfg.Services[service]
	if !ok {
		return nil, fmt.Errorf("modbus: %s.%s: no command mapped: %w", name, service, device.ErrUnknownService)
	}
	regs := make([]uint16, len(cmd.Inputs))
	for i, id := range cmd.Inputs {
		switch v := in[id].(type) {
		case int64:
			if v < 0 || v > math.MaxUint16 {
				return nil, fmt.Errorf("modbus: %s.%s: input %s: %d does not fit a register", name, service, id, v)
			}
			regs[i] = uint16(v)
		case bool:
			if v {
				regs[i] = 1
			}
		case nil:
			return nil, fmt.Errorf("modbus: %s.%s: input %s: missing", name, service, id)
		default:
			return nil, fmt.Errorf("modbus: %s.%s: input %s: %v (%T) is not an integer", name, service, id, v, v)
		}
	}
	err = md.ep.do(ctx, md.cfg.Unit, func() error { return md.ep.client.WriteRegisters(cmd.Address, regs) })
	if err != nil {
		return nil, fmt.Errorf("modbus: %s.%s: %w", name, service, err)
	}
	return map[string]any{}, nil
}

// Close closes every connection; it is safe to call twice.
func (d *Driver) Close(context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	eps := d.endpoints
	d.endpoints, d.devices = map[string]*endpoint{}, map[string]*mdev{}
	d.mu.Unlock()
	for _, ep := range eps {
		ep.close()
	}
	return nil
}

// endpoint is one connection, shared by the devices behind it.
type endpoint struct {
	url     string
	timeout time.Duration // the library's per-request timeout
	host    device.Host
	client  *mb.ModbusClient
	retry   backoff.Policy
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}

	sem      chan struct{}  // capacity 1: one request at a time on the connection
	inflight sync.WaitGroup // requests' goroutines

	mu      sync.Mutex // guards what follows
	up      bool
	devices map[string]bool
	lastErr error
}

func newEndpoint(url string, timeout time.Duration, host device.Host) (*endpoint, error) {
	client, err := mb.NewClient(&mb.ClientConfiguration{URL: url, Timeout: timeout, Logger: log.New(io.Discard, "", 0)})
	if err != nil {
		return nil, fmt.Errorf("endpoint %s: %w", url, err)
	}
	ep := &endpoint{url: url, timeout: timeout, host: host, client: client, retry: backoff.Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second},
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}), devices: map[string]bool{},
		sem:     make(chan struct{}, 1),
		lastErr: errors.New("not connected yet")}
	// The first attempt is made here, so that a device attached to a
	// reachable endpoint answers at once; later ones in the background.
	if err := client.Open(); err == nil {
		ep.up, ep.lastErr = true, nil
	} else {
		ep.lastErr = err
		ep.kick <- struct{}{}
	}
	go ep.connect()
	return ep, nil
}

func (ep *endpoint) add(name string) {
	ep.mu.Lock()
	ep.devices[name] = true
	up, cause := ep.up, ep.lastErr
	ep.mu.Unlock()
	if up {
		ep.host.SetState(name, device.Online, nil)
	} else {
		ep.host.SetState(name, device.Offline, cause)
	}
}

func (ep *endpoint) remove(name string) int {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	delete(ep.devices, name)
	return len(ep.devices)
}

// connect (re)opens the connection whenever it is kicked, with backoff,
// telling the devices when it is up.
func (ep *endpoint) connect() {
	defer close(ep.done)
	for {
		select {
		case <-ep.stop:
			return
		case <-ep.kick:
		}
		for attempt := 0; ; attempt++ {
			ep.mu.Lock()
			up := ep.up
			ep.mu.Unlock()
			if up {
				break
			}
			// Not under ep.mu: while the connection is down no request
			// touches the client, and a slow connect must not hold up
			// the requests that fail at once meanwhile.
			err := ep.client.Open()
			ep.mu.Lock()
			if err == nil {
				ep.up, ep.lastErr = true, nil
			} else {
				ep.lastErr = err
			}
			names := keys(ep.devices)
			ep.mu.Unlock()
			if err == nil {
				for _, n := range names {
					ep.host.SetState(n, device.Online, nil)
				}
				break
			}
			t := time.NewTimer(ep.retry.Delay(attempt))
			select {
			case <-t.C:
			case <-ep.stop:
				t.Stop()
				return
			}
		}
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// failLocked takes the connection down after a transport error; ep.mu is
// held. It returns the devices to tell.
func (ep *endpoint) failLocked(err error) []string {
	if !ep.up {
		return nil
	}
	_ = ep.client.Close()
	ep.up, ep.lastErr = false, err
	select {
	case ep.kick <- struct{}{}:
	default:
	}
	return keys(ep.devices)
}

// do runs one request on the connection for unit, failing at once while
// the connection is down. The library's calls take no context but end
// within the endpoint's timeout: when ctx's deadline is further than that,
// the request runs on the caller's goroutine; when it is nearer, on a
// goroutine of its own (waited for by close), and the caller returns at
// the deadline. A cancellation before the deadline is seen once the
// request on the wire has finished.
func (ep *endpoint) do(ctx context.Context, unit uint8, op func() error) error {
	select {
	case ep.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	ep.mu.Lock()
	up, cause := ep.up, ep.lastErr
	ep.mu.Unlock()
	if !up {
		<-ep.sem
		return fmt.Errorf("%w: %s: %v", device.ErrOffline, ep.url, cause)
	}
	request := func() error {
		defer func() { <-ep.sem }()
		_ = ep.client.SetUnitId(unit)
		err := op()
		if err != nil && !isException(err) {
			ep.mu.Lock()
			down := ep.failLocked(err)
			ep.mu.Unlock()
			for _, n := range down {
				ep.host.SetState(n, device.Offline, err)
			}
			err = fmt.Errorf("%w: %s: %v", device.ErrOffline, ep.url, err)
		}
		return err
	}
	if deadline, ok := ctx.Deadline(); !ok || time.Until(deadline) > ep.timeout {
		return request()
	}
	result := make(chan error, 1)
	ep.inflight.Add(1)
	go func() {
		defer ep.inflight.Done()
		result <- request()
	}()
	select {
	case err := <-result:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// isException reports a Modbus exception (the device answered, refusing),
// as opposed to a transport failure.
func isException(err error) bool {
	for _, e := range []error{mb.ErrIllegalFunction, mb.ErrIllegalDataAddress, mb.ErrIllegalDataValue, mb.ErrServerDeviceFailure,
		mb.ErrServerDeviceBusy, mb.ErrMemoryParityError, mb.ErrAcknowledge, mb.ErrGWPathUnavailable, mb.ErrGWTargetFailedToRespond} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (ep *endpoint) read(ctx context.Context, unit uint8, r Register, kind device.Kind) (any, error) {
	var out any
	err := ep.do(ctx, unit, func() error {
		switch r.Table {
		case "coil":
			v, err := ep.client.ReadCoil(r.Address)
			out = v
			return err
		case "discrete":
			v, err := ep.client.ReadDiscreteInput(r.Address)
			out = v
			return err
		}
		table := mb.HOLDING_REGISTER
		if r.Table == "input" {
			table = mb.INPUT_REGISTER
		}
		regs, err := ep.client.ReadRegisters(r.Address, uint16(words[r.Type]), table)
		if err != nil {
			return err
		}
		if r.Bit != nil {
			out = regs[0]&(1<<*r.Bit) != 0
			return nil
		}
		v := decode(r, regs)*r.Scale + r.Offset
		if kind == device.Int || kind == device.Enum {
			out = int64(math.Round(v))
		} else {
			out = v
		}
		return nil
	})
	return out, err
}

func (ep *endpoint) write(ctx context.Context, unit uint8, r Register, value any) error {
	var regs []uint16
	if r.Table != "coil" && r.Bit == nil {
		var f float64
		switch v := value.(type) {
		case int64:
			f = float64(v)
		case float64:
			f = v
		default:
			return fmt.Errorf("value %v (%T) is not a number", value, value)
		}
		var err error
		if regs, err = encode(r, (f-r.Offset)/r.Scale); err != nil {
			return err
		}
	}
	on, _ := value.(bool)
	return ep.do(ctx, unit, func() error {
		switch {
		case r.Table == "coil":
			return ep.client.WriteCoil(r.Address, on)
		case r.Bit != nil:
			cur, err := ep.client.ReadRegisters(r.Address, 1, mb.HOLDING_REGISTER)
			if err != nil {
				return err
			}
			reg := cur[0] &^ (1 << *r.Bit)
			if on {
				reg |= 1 << *r.Bit
			}
			return ep.client.WriteRegister(r.Address, reg)
		case len(regs) == 1:
			return ep.client.WriteRegister(r.Address, regs[0])
		default:
			return ep.client.WriteRegisters(r.Address, regs)
		}
	})
}

func (ep *endpoint) close() {
	close(ep.stop)
	<-ep.done
	ep.inflight.Wait()
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.up {
		_ = ep.client.Close()
		ep.up = false
	}
}

// registerBytes lays registers out as bytes, first word first, each word
// high byte first, after applying the configured orders.
func registerBytes(r Register, regs []uint16) []byte {
	n := len(regs)
	b := make([]byte, 2*n)
	for i, w := range regs {
		j := i
		if r.WordOrder == "little" {
			j = n - 1 - i
		}
		if r.ByteOrder == "little" {
			w = w<<8 | w>>8
		}
		binary.BigEndian.PutUint16(b[2*j:], w)
	}
	return b
}

func decode(r Register, regs []uint16) float64 {
	b := registerBytes(r, regs)
	switch r.Type {
	case "int16":
		return float64(int16(binary.BigEndian.Uint16(b)))
	case "uint32":
		return float64(binary.BigEndian.Uint32(b))
	case "int32":
		return float64(int32(binary.BigEndian.Uint32(b)))
	case "float32":
		return float64(math.Float32frombits(binary.BigEndian.Uint32(b)))
	case "float64":
		return math.Float64frombits(binary.BigEndian.Uint64(b))
	default:
		return float64(binary.BigEndian.Uint16(b))
	}
}

// encode is decode's inverse; raw must fit the type.
func encode(r Register, raw float64) ([]uint16, error) {
	n := words[r.Type]
	b := make([]byte, 2*n)
	fits := func(lo, hi float64) error {
		if raw < lo || raw > hi {
			return fmt.Errorf("raw value %g does not fit %s", raw, r.Type)
		}
		return nil
	}
	switch r.Type {
	case "int16":
		if err := fits(math.MinInt16, math.MaxInt16); err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint16(b, uint16(int16(math.Round(raw))))
	case "uint32":
		if err := fits(0, math.MaxUint32); err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint32(b, uint32(math.Round(raw)))
	case "int32":
		if err := fits(math.MinInt32, math.MaxInt32); err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint32(b, uint32(int32(math.Round(raw))))
	case "float32":
		binary.BigEndian.PutUint32(b, math.Float32bits(float32(raw)))
	case "float64":
		binary.BigEndian.PutUint64(b, math.Float64bits(raw))
	default:
		if err := fits(0, math.MaxUint16); err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint16(b, uint16(math.Round(raw)))
	}
	// Undo registerBytes' layout.
	regs := make([]uint16, n)
	for j := range n {
		w := binary.BigEndian.Uint16(b[2*j:])
		if r.ByteOrder == "little" {
			w = w<<8 | w>>8
		}
		i := j
		if r.WordOrder == "little" {
			i = n - 1 - j
		}
		regs[i] = w
	}
	return regs, nil
}
