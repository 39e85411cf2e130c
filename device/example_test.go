package device_test

import (
	"fmt"

	"github.com/edgekit/edgekit/device"
)

// A thing model built in Go; values are checked against it in both
// directions (reports from a device, writes to it).
func ExampleModel() {
	maxC, minC := 120.0, -40.0
	m := &device.Model{
		Properties: []device.Property{
			{Identifier: "temperature", Access: device.ReadOnly, Type: device.DataType{Kind: device.Float, Min: &minC, Max: &maxC, Unit: "°C"}},
			{Identifier: "mode", Access: device.ReadWrite, Type: device.DataType{Kind: device.Enum, Values: map[int64]string{0: "off", 1: "heating"}}},
		},
	}
	if err := m.Check(); err != nil {
		fmt.Println(err)
		return
	}
	v, err := m.PropertyValue("temperature", 21.5)
	fmt.Println(v, err)
	_, err = m.PropertyValue("temperature", 130.0)
	fmt.Println(err)
	_, err = m.PropertyValue("mode", 3)
	fmt.Println(err)
	// Output:
	// 21.5 <nil>
	// invalid value: properties.temperature: 130 above max 120
	// invalid value: properties.mode: 3 is not one of the enum's values [0 1]
}
