// Package edge composes edgekit's parts into a gateway: the in-process bus,
// the local Mosquitto broker (package edge/broker), bridges to upstream
// brokers (package edge/bus/bridge), the function host, triggers, container
// and device managers, and central management of application versions and
// configurations. It is for gateway vendors writing their firmware; the
// subpackages under edge/bus are what every other part speaks.
package edge
