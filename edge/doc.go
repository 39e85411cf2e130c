// Package edge composes edgekit's parts into a gateway: Gateway starts, in
// order, the in-process bus, the local Mosquitto broker and its bridge
// (package edge/broker), the upstream connection with its disk queue and
// bridge, the state store (edge/state), the function host, the triggers,
// the device manager, the container manager, the reconciler that applies
// deployments (edge/reconcile, edge/app) and the local HTTP API
// (edge/api), and stops them in reverse. It is for gateway vendors writing
// their firmware: New takes one Options struct, Run serves until its
// context ends or Close, and the accessors give the parts to firmware that
// wants more. The subpackages under edge/bus are what every other part
// speaks; nothing there imports a room above it.
package edge
