// Package device is the device-driver API: the Driver interface that driver
// developers implement, the Host a driver calls back, the thing model
// (properties, services, events) and the Manager that validates values,
// keeps a shadow per device and publishes on the bus. It is for driver
// developers and for gateway firmware that connects field devices.
package device
