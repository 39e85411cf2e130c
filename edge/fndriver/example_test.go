package fndriver_test

import (
	"context"
	"fmt"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/edge/fncall"
	"github.com/edgekit/edgekit/edge/fndriver"
	"github.com/edgekit/edgekit/function"
)

// A driver written as a function, wired as edge.Gateway wires it: the
// function host's calls go to the gateway's call server, which hands the
// driver methods to the set; the set's driver for the function is added
// to the device manager. A device attached before the function runs is
// kept, offline, and given to the driver when it starts and says hello.
func Example() {
	ctx := context.Background()
	b := membus.New(nil)
	defer b.Close(ctx)
	var calls *fncall.Server
	host, err := function.New(&function.Options{Calls: func(ctx context.Context, c *function.Call) ([]byte, error) { return calls.Serve(ctx, c) }})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer host.Close(ctx)
	drivers := fndriver.NewSet(host, nil)
	calls = fncall.New(b, host, &fncall.Options{Drivers: drivers.Serve})

	devices := device.NewManager(nil)
	defer devices.Close(ctx)
	if err := devices.AddDriver(ctx, "thermometers", drivers.Driver("thermometers"), nil); err != nil {
		fmt.Println(err)
		return
	}
	model, _ := device.ParseTSL([]byte(`{"properties": [{"identifier": "temperature", "accessMode": "r", "dataType": {"type": "double"}}]}`))
	if err := devices.Attach(ctx, "thermometers", device.Device{Name: "hall", Model: model}, nil); err != nil {
		fmt.Println(err)
		return
	}
	sh, _ := devices.Shadow("hall")
	fmt.Println("hall:", sh.State)
	// Deploying the function "thermometers" (continuous, one instance)
	// brings it online.

	// Output:
	// hall: offline
}
