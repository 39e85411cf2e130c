package edge

import (
	"encoding/json"
	"log/slog"
	"regexp"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/broker"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/bridge"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/edge/state"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/codepkg"
	"github.com/edgekit/edgekit/trigger"
	"github.com/edgekit/edgekit/trigger/message"
	"github.com/edgekit/edgekit/trigger/timer"
)

// Options configure a Gateway. DataDir and Instance are required; every
// part left nil runs with its defaults, and the optional parts (the local
// broker, the upstream broker, containers) run only when configured. The
// gateway copies what it is given.
type Options struct {
	// DataDir holds everything the gateway keeps: the state file, function
	// packages, queues, the broker's files, the local API token. It must
	// be the gateway's own (see internal/safefile.CheckPrivateDir).
	DataDir string
	// Instance is the gateway's id: 1-64 letters, digits, '.', '_' or
	// '-'. It names the gateway's topics (edgekit/instances/{id}/...) and
	// its MQTT client ids.
	Instance string
	// Logger receives every part's records; nil discards.
	Logger *slog.Logger

	// Bus is the in-process bus the gateway's own flows run on; default a
	// membus.
	Bus bus.Bus
	// State, when set, is the state store to use (the caller opens and
	// closes it); default <data>/state.db, opened and closed by the
	// gateway.
	State *state.Store
	// Broker, when set, runs the local Mosquitto (for the devices and
	// programs on the LAN); DataDir defaults to <data>/broker. The gateway
	// connects to it as the user "edgekit-gateway" with a password drawn
	// at each start, allowed every topic.
	Broker *broker.Options
	// LocalRoutes bridge the in-process bus and the local broker; default
	// DefaultLocalRoutes.
	LocalRoutes *Routes
	// Upstream, when set, is the cloud broker's connection: Brokers is
	// required; ClientID defaults to the instance, QueueDir to
	// <data>/uplink-queue (messages wait there while the link is down),
	// and Will to the gateway's offline presence.
	Upstream *mqttbus.Options
	// UpstreamRoutes bridge the in-process bus and the upstream broker;
	// default DefaultUpstreamRoutes.
	UpstreamRoutes *Routes

	// Functions configures the function host; DataDir defaults to
	// <data>/functions. The local API's address and each function's own
	// token are added to out-of-process functions' environment.
	Functions *function.Options
	// Builtins are functions the firmware deploys itself (after
	// registering their handlers on Functions()): every deployment keeps
	// them, beside its own apps. BuiltinTriggers start them.
	Builtins        []function.Spec
	BuiltinTriggers []trigger.Config
	// Timers and Messages configure the timer and message triggers
	// (timer state defaults to <data>/triggers).
	Timers   *timer.Options
	Messages *message.Options
	// TriggerTypes adds trigger types beside "timer" and "message".
	TriggerTypes map[string]trigger.Factory
	// Packages configures the function package store at <data>/packages:
	// a PublicKey there makes signed packages mandatory.
	Packages *codepkg.Options

	// ContainerRuntime, when set, runs container apps (container/podman is
	// the real one). Unreachable, container apps report the runtime
	// unavailable while everything else runs; unset, deployments with
	// container apps are refused.
	ContainerRuntime container.Runtime
	Containers       *container.ManagerOptions
	// HostPaths are the host paths (prefixes) container apps may bind
	// mount or use as devices; none by default.
	HostPaths []string

	// Devices configures the device manager; Publish defaults to the bus
	// (package device/devicebus). Drivers are added at start.
	Devices *device.ManagerOptions
	Drivers []Driver

	// DeploymentFile is watched for deployment documents; default
	// <data>/deployment.json; "-" watches none.
	DeploymentFile string
	// Probation is a version's probation when it names none; default 30 s.
	Probation time.Duration
	// StatusInterval is how often the deployment status is published
	// again when nothing changed (a heartbeat, by which the fleet sees a
	// gateway that missed its document), each time within ±20% of it so
	// that a fleet of gateways started together does not report
	// together; default 5 min, negative for never.
	StatusInterval time.Duration
	// OnDeployStep is the reconciler's OnStep (package edge/reconcile):
	// called as a deployment's step is written to the journal.
	OnDeployStep func(step string)

	// API configures the local HTTP API; nil serves it on 127.0.0.1:8780.
	API *APIOptions

	// Metrics, when set, is the registry the parts' Prometheus collectors
	// go on (packages function/metrics and edge/metrics) and the local
	// API's /metrics serves.
	Metrics *prometheus.Registry

	// StopTimeout bounds the stop of every part when Run ends; default
	// 10 s.
	StopTimeout time.Duration
}

// Driver is a device driver the gateway adds at start.
type Driver struct {
	Name   string
	Driver device.Driver
	Config json.RawMessage
}

// APIOptions configure the local HTTP API.
type APIOptions struct {
	// Address is the TCP address to listen on; default 127.0.0.1:8780
	// (":0" picks a free port; "-" listens on none).
	Address string
	// Socket, when set, is a unix socket path the API also listens on
	// (made 0600).
	Socket string
	// Token is the operator's bearer token; default the one kept in
	// <data>/api-token (made at the first start, 0600).
	Token string
}

// Routes are what a bridge forwards between the in-process bus (Out: from
// it) and a broker (In: to it).
type Routes struct {
	Out, In []bridge.Route
}

// DefaultLocalRoutes let the LAN read what devices report and the
// functions' outputs, and call functions and devices; replies to LAN
// callers go out under replies/.
func DefaultLocalRoutes() *Routes {
	q1 := bus.AtLeastOnce
	return &Routes{
		Out: []bridge.Route{
			{Filter: "devices/+/properties", QoS: q1}, {Filter: "devices/+/state", QoS: q1},
			{Filter: "devices/+/events/#", QoS: q1}, {Filter: "outputs/#", QoS: q1}, {Filter: "replies/#", QoS: q1},
		},
		In: []bridge.Route{
			{Filter: "functions/+/invoke", QoS: q1}, {Filter: "devices/+/get", QoS: q1},
			{Filter: "devices/+/set", QoS: q1}, {Filter: "devices/+/services/+", QoS: q1},
		},
	}
}

// DefaultUpstreamRoutes send device reports, events and state, and the
// functions' outputs up under edgekit/instances/{instance}/, and the
// gateway's status and its replies as they are; the desired deployment
// and the central side's logs requests come down.
func DefaultUpstreamRoutes(instance string) *Routes {
	q1 := bus.AtLeastOnce
	prefix := TopicPrefix(instance)
	return &Routes{
		Out: []bridge.Route{
			{Filter: "devices/+/properties", QoS: q1, AddPrefix: prefix}, {Filter: "devices/+/state", QoS: q1, AddPrefix: prefix},
			{Filter: "devices/+/events/#", QoS: q1, AddPrefix: prefix}, {Filter: "outputs/#", QoS: q1, AddPrefix: prefix},
			{Filter: StatusTopic(instance), QoS: q1}, {Filter: app.RepliesPrefix(instance) + "#", QoS: q1},
		},
		In: []bridge.Route{{Filter: DesiredTopic(instance), QoS: q1}, {Filter: app.LogsTopic(instance), QoS: q1}},
	}
}

// The gateway's topics (docs/TOPICS.md), as package app defines them.

// TopicPrefix is what the instance's topics start with upstream.
func TopicPrefix(instance string) string { return app.TopicPrefix(instance) }

// DesiredTopic carries the instance's desired deployment (retained, QoS 1).
func DesiredTopic(instance string) string { return app.DesiredTopic(instance) }

// StatusTopic carries the instance's deployment status (retained, QoS 1).
func StatusTopic(instance string) string { return app.StatusTopic(instance) }

// PresenceTopic carries whether the instance is connected (retained,
// QoS 1; the upstream connection's Will says offline).
func PresenceTopic(instance string) string { return app.PresenceTopic(instance) }

var instanceRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
