// Package trigger starts functions: on a time (interval, cron, a time
// point), on a message (bus topic filters from devices or any source), or
// on a call (Go, local HTTP, MQTT v5 request/response). It is for gateway
// firmware that wires events to functions; it invokes through a small
// Invoker interface, so it does not import package function.
package trigger
