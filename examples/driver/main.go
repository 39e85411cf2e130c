// Command driver walks through writing a device driver for edgekit. The
// device speaks a small line protocol over TCP:
//
//	READ <property>\n            →  <value>\n    or  ERR <why>\n
//	WRITE <property> <value>\n   →  OK\n         or  ERR <why>\n
//
// lineDriver below is the whole driver: it implements device.Driver, and
// the Manager does the rest (checking values against the thing model, the
// shadow, polling, one call at a time per device, online tracking, the bus
// topics). The program runs a simulated device on loopback, attaches it,
// prints what the gateway would publish for a few seconds, sets a value
// through the bus as a cloud application would, and stops.
//
//	go run ./examples/driver
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/devicebus"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/membus"
)

// Step 1: the device's settings, decoded from device.Device.Config.
type lineConfig struct {
	Address string `json:"address"` // host:port
}

// Step 2: the driver. One connection per device; the Manager already makes
// calls for one device one at a time (the driver does not implement
// device.ConcurrentDriver), so a device's connection needs no lock of its
// own beyond the map's.
type lineDriver struct {
	mu      sync.Mutex
	host    device.Host
	devices map[string]*lineDevice
}

type lineDevice struct {
	dev  device.Device
	conn net.Conn
	r    *bufio.Reader
}

// Open keeps the Host: the driver reports to it and tells it states.
func (d *lineDriver) Open(_ context.Context, _ json.RawMessage, host device.Host) error {
	d.host, d.devices = host, map[string]*lineDevice{}
	return nil
}

// Attach connects to the device. A device that cannot be reached is still
// attached, offline: the Manager keeps its desired values for when it is
// back.
func (d *lineDriver) Attach(ctx context.Context, dev device.Device) error {
	var cfg lineConfig
	if err := json.Unmarshal(dev.Config, &cfg); err != nil || cfg.Address == "" {
		return fmt.Errorf("line driver: device %s: config: want {\"address\": \"host:port\"}", dev.Name)
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", cfg.Address)
	if err != nil {
		d.host.SetState(dev.Name, device.Offline, err)
		return nil
	}
	d.mu.Lock()
	d.devices[dev.Name] = &lineDevice{dev: dev, conn: conn, r: bufio.NewReader(conn)}
	d.mu.Unlock()
	d.host.SetState(dev.Name, device.Online, nil)
	return nil
}

// Update reconnects with the new settings.
func (d *lineDriver) Update(ctx context.Context, dev device.Device) error {
	_ = d.Detach(ctx, dev.Name)
	return d.Attach(ctx, dev)
}

// Detach closes the device's connection.
func (d *lineDriver) Detach(_ context.Context, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	ld, ok := d.devices[name]
	if !ok {
		return fmt.Errorf("line driver: %s: %w", name, device.ErrUnknownDevice)
	}
	delete(d.devices, name)
	return ld.conn.Close()
}

func (d *lineDriver) device(name string) (*lineDevice, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ld, ok := d.devices[name]
	if !ok {
		return nil, fmt.Errorf("line driver: %s: %w", name, device.ErrUnknownDevice)
	}
	return ld, nil
}

// exchange sends one line and reads the answer, bounded by ctx: the
// connection's deadline follows it. A broken connection means offline.
func (d *lineDriver) exchange(ctx context.Context, ld *lineDevice, line string) (string, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Second)
	}
	_ = ld.conn.SetDeadline(deadline)
	if _, err := io.WriteString(ld.conn, line+"\n"); err != nil {
		d.host.SetState(ld.dev.Name, device.Offline, err)
		return "", fmt.Errorf("%w: %v", device.ErrOffline, err)
	}
	answer, err := ld.r.ReadString('\n')
	if err != nil {
		d.host.SetState(ld.dev.Name, device.Offline, err)
		return "", fmt.Errorf("%w: %v", device.ErrOffline, err)
	}
	answer = strings.TrimSpace(answer)
	if why, failed := strings.CutPrefix(answer, "ERR "); failed {
		return "", errors.New(why)
	}
	return answer, nil
}

// ReadProperties reads each property; one that fails does not fail the
// others. Values come back as text: DataType.Value would accept numbers
// given as float64, so the driver converts by the model's kind.
func (d *lineDriver) ReadProperties(ctx context.Context, name string, ids []string) (map[string]device.Reading, error) {
	ld, err := d.device(name)
	if err != nil {
		return nil, err
	}
	out := map[string]device.Reading{}
	for _, id := range ids {
		p, ok := ld.dev.Model.Property(id)
		if !ok {
			out[id] = device.Reading{Err: fmt.Errorf("%s.%s: %w", name, id, device.ErrUnknownProperty)}
			continue
		}
		text, err := d.exchange(ctx, ld, "READ "+id)
		if errors.Is(err, device.ErrOffline) {
			return nil, err // nothing more can be read
		}
		if err != nil {
			out[id] = device.Reading{Err: err}
			continue
		}
		v, err := parse(p.Type.Kind, text)
		out[id] = device.Reading{Value: v, Err: err, Time: time.Now()}
	}
	return out, nil
}

func parse(kind device.Kind, text string) (any, error) {
	switch kind {
	case device.Bool:
		return strconv.ParseBool(text)
	case device.Text:
		return text, nil
	default:
		return strconv.ParseFloat(text, 64)
	}
}

// WriteProperties writes values the Manager has already checked; a driver
// still refuses read-only properties itself (device/devicetest checks it),
// since it may be used without a Manager.
func (d *lineDriver) WriteProperties(ctx context.Context, name string, values map[string]any) (map[string]error, error) {
	ld, err := d.device(name)
	if err != nil {
		return nil, err
	}
	out := map[string]error{}
	for id, v := range values {
		if p, ok := ld.dev.Model.Property(id); !ok || p.Access != device.ReadWrite {
			out[id] = fmt.Errorf("%s.%s: %w", name, id, device.ErrReadOnly)
			continue
		}
		_, err := d.exchange(ctx, ld, fmt.Sprintf("WRITE %s %v", id, v))
		if errors.Is(err, device.ErrOffline) {
			return nil, err
		}
		out[id] = err
	}
	return out, nil
}

// CallService: this device has no services.
func (d *lineDriver) CallService(_ context.Context, name, service string, _ map[string]any) (map[string]any, error) {
	return nil, fmt.Errorf("%s.%s: %w", name, service, device.ErrUnknownService)
}

// Close closes every connection; twice is fine.
func (d *lineDriver) Close(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, ld := range d.devices {
		_ = ld.conn.Close()
		delete(d.devices, name)
	}
	return nil
}

// Step 3: the thing model, as TSL JSON (or built in Go).
const thermostatTSL = `{"properties": [
  {"identifier": "temperature", "accessMode": "r", "dataType": {"type": "float", "specs": {"min": "-20", "max": "60", "unit": "°C"}}},
  {"identifier": "target", "accessMode": "rw", "dataType": {"type": "int", "specs": {"min": "5", "max": "30", "unit": "°C"}}}
]}`

// Step 4: wire it up: a Manager that publishes on the bus, the request
// topics, the driver, the device and a poll group.
func run(ctx context.Context, out io.Writer, addr string, wait time.Duration) error {
	b := membus.New(nil)
	defer b.Close(context.Background())
	m := device.NewManager(&device.ManagerOptions{Publish: devicebus.Publisher(b, "")})
	defer m.Close(context.Background())
	api, err := devicebus.Serve(ctx, b, m, nil)
	if err != nil {
		return err
	}
	defer api.Close(context.Background())
	if _, err := b.Subscribe(ctx, "devices/#", func(_ context.Context, msg *bus.Message) {
		fmt.Fprintf(out, "%s %s\n", msg.Topic, msg.Payload)
	}, nil); err != nil {
		return err
	}
	model, err := device.ParseTSL([]byte(thermostatTSL))
	if err != nil {
		return err
	}
	if err := m.AddDriver(ctx, "line", &lineDriver{}, nil); err != nil {
		return err
	}
	dev := device.Device{Name: "thermostat", Model: model, Config: json.RawMessage(fmt.Sprintf(`{"address": %q}`, addr))}
	if err := m.Attach(ctx, "line", dev, []device.PollGroup{{Properties: []string{"temperature", "target"}, Every: 200 * time.Millisecond}}); err != nil {
		return err
	}
	time.Sleep(wait)

	// A cloud application sets the target over MQTT v5 request/response.
	replies := make(chan []byte, 2)
	if _, err := b.Subscribe(ctx, "replies/app", func(_ context.Context, msg *bus.Message) { replies <- msg.Payload }, nil); err != nil {
		return err
	}
	for _, body := range []string{`{"properties": {"target": 22}}`, `{"properties": {"target": 45}}`} {
		if err := b.Publish(ctx, &bus.Message{Topic: "devices/thermostat/set", Payload: []byte(body), QoS: bus.AtLeastOnce,
			ResponseTopic: "replies/app", CorrelationData: []byte("1")}); err != nil {
			return err
		}
		select {
		case r := <-replies:
			fmt.Fprintf(out, "set %s → %s\n", body, r)
		case <-time.After(5 * time.Second):
			return errors.New("no answer to the set request")
		}
	}
	time.Sleep(wait)
	return nil
}

// simulate is the device itself: a thermostat on loopback.
func simulate(l net.Listener) {
	var mu sync.Mutex
	values := map[string]float64{"temperature": 19.5, "target": 20}
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			sc := bufio.NewScanner(conn)
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				mu.Lock()
				switch {
				case len(f) == 2 && f[0] == "READ":
					if v, ok := values[f[1]]; ok {
						fmt.Fprintf(conn, "%g\n", v)
					} else {
						fmt.Fprintf(conn, "ERR no property %s\n", f[1])
					}
				case len(f) == 3 && f[0] == "WRITE":
					v, err := strconv.ParseFloat(f[2], 64)
					if err != nil {
						fmt.Fprintf(conn, "ERR %v\n", err)
						break
					}
					values[f[1]] = v
					fmt.Fprintln(conn, "OK")
				default:
					fmt.Fprintln(conn, "ERR bad request")
				}
				// The room warms towards the target.
				values["temperature"] += (values["target"] - values["temperature"]) / 10
				mu.Unlock()
			}
		}()
	}
}

func main() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer l.Close()
	go simulate(l)
	if err := run(context.Background(), os.Stdout, l.Addr().String(), 2*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "driver:", err)
		os.Exit(1)
	}
}
