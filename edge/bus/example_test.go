package bus_test

import (
	"fmt"

	"github.com/edgekit/edgekit/edge/bus"
)

func ExampleMatch() {
	fmt.Println(bus.Match("devices/+/properties/#", "devices/pump1/properties/flow"))
	fmt.Println(bus.Match("#", "$SYS/broker/uptime"))
	// Output:
	// true
	// false
}

func ExampleValidateFilter() {
	fmt.Println(bus.ValidateFilter("$share/workers/jobs/+"))
	fmt.Println(bus.ValidateFilter("jobs/#/done"))
	// Output:
	// <nil>
	// invalid topic filter "jobs/#/done": '#' must be the whole last level (level 2 is "#")
}

func ExampleFilterIndex() {
	x := bus.NewFilterIndex[string]()
	x.Add("devices/+/events/#", "event log")
	x.Add("devices/pump1/#", "pump dashboard")
	x.Add("apps/#", "apps")
	x.Match("devices/pump1/events/alarm", func(v string) { fmt.Println(v) })
	// Unordered output:
	// event log
	// pump dashboard
}
