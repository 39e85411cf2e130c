// Package fleettest starts fleets for tests (New, Run) and simulates
// gateways for the fleet's tests and benchmarks: each speaks the gateway's protocol (package edge/app's
// topics and documents) over a bus of its own — a real MQTT connection at
// scale — and reports plausible status: presence at connection, then for
// each new desired revision "in progress" and a final outcome its Behave
// function chooses, rolling back to the last good deployment on failure as
// a real gateway does.
package fleettest

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/internal/busrr"
)

// Behave decides how a simulated gateway ends a deployment: nil for
// success, or the reason it failed (it then rolls back). A nil Behave
// succeeds every time.
type Behave func(instance string, d *app.Deployment) error

// Conn is what a simulated gateway needs of its connection: a bus.Bus,
// or a lighter client for thousands of them.
type Conn interface {
	Publish(ctx context.Context, msg *bus.Message) error
	Subscribe(ctx context.Context, filter string, h bus.Handler, opts *bus.SubscribeOptions) (bus.Subscription, error)
}

// Gateway is one simulated gateway.
type Gateway struct {
	ID     string
	bus    Conn
	behave Behave
	sub    bus.Subscription

	mu      sync.Mutex
	taken   uint64   // the newest revision taken
	good    *app.Ref // the last deployment that succeeded
	goodDoc *app.Deployment
	status  app.Status
	history []app.Status
	logs    map[string][]app.LogLine // by app; nil until SetLogs
	logsSub bus.Subscription
}

// Start connects a simulated gateway on b: it announces itself online and
// takes desired documents from then on.
func Start(ctx context.Context, id string, b Conn, behave Behave) (*Gateway, error) {
	g := &Gateway{ID: id, bus: b, behave: behave}
	sub, err := b.Subscribe(ctx, app.DesiredTopic(id), g.desired, &bus.SubscribeOptions{QoS: bus.AtLeastOnce, Buffer: 16})
	if err != nil {
		return nil, fmt.Errorf("gateway %s: %w", id, err)
	}
	g.sub = sub
	if err := g.Presence(ctx, true); err != nil {
		_ = sub.Unsubscribe(ctx)
		return nil, err
	}
	return g, nil
}

// Reconnect moves the gateway to a new connection after its old one was
// lost, as a gateway does: it subscribes again, says it is online, and
// reports its status again.
func (g *Gateway) Reconnect(ctx context.Context, b Conn) error {
	sub, err := b.Subscribe(ctx, app.DesiredTopic(g.ID), g.desired, &bus.SubscribeOptions{QoS: bus.AtLeastOnce, Buffer: 16})
	if err != nil {
		return fmt.Errorf("gateway %s: %w", g.ID, err)
	}
	g.mu.Lock()
	g.bus, g.sub = b, sub
	g.mu.Unlock()
	if err := g.Presence(ctx, true); err != nil {
		return err
	}
	g.Report(ctx)
	return nil
}

// Presence publishes the gateway's presence.
func (g *Gateway) Presence(ctx context.Context, online bool) error {
	b, _ := json.Marshal(app.Presence{Instance: g.ID, Online: online, Time: time.Now().UTC()})
	g.mu.Lock()
	conn := g.bus
	g.mu.Unlock()
	return conn.Publish(ctx, &bus.Message{Topic: app.PresenceTopic(g.ID), Payload: b, QoS: bus.AtLeastOnce, Retain: true})
}

func (g *Gateway) desired(ctx context.Context, msg *bus.Message) {
	d, err := app.ParseDeployment(msg.Payload)
	g.mu.Lock()
	if err != nil {
		ref := app.PeekRef(msg.Payload)
		if ref.Revision > g.taken {
			g.taken = ref.Revision
			g.report(ctx, app.Status{Deployment: ref.Deployment, Revision: ref.Revision, Outcome: app.OutcomeRejected, Code: app.CodeInvalid, Reason: err.Error()})
		}
		g.mu.Unlock()
		return
	}
	if d.Revision <= g.taken {
		g.mu.Unlock()
		return // older or the same: a gateway ignores it
	}
	g.taken = d.Revision
	apps := func(d *app.Deployment, phase app.Phase) []app.AppStatus {
		var out []app.AppStatus
		for _, a := range d.Apps {
			out = append(out, app.AppStatus{App: a.App.Name, Kind: a.App.Kind, Version: a.Version.Version, Phase: phase, Since: time.Now().UTC()})
		}
		return out
	}
	g.report(ctx, app.Status{Deployment: d.ID, Revision: d.Revision, Outcome: app.OutcomeInProgress, Running: g.good, Apps: apps(d, app.PhaseDownloading)})
	var failed error
	if g.behave != nil {
		failed = g.behave(g.ID, d)
	}
	if failed != nil {
		st := app.Status{Deployment: d.ID, Revision: d.Revision, Outcome: app.OutcomeRolledBack, Code: app.CodeCrashLoop, Reason: failed.Error(), Running: g.good}
		if g.goodDoc != nil {
			st.Apps = apps(g.goodDoc, app.PhaseRunning)
		}
		g.report(ctx, st)
	} else {
		g.good, g.goodDoc = &app.Ref{Deployment: d.ID, Revision: d.Revision}, d
		g.report(ctx, app.Status{Deployment: d.ID, Revision: d.Revision, Outcome: app.OutcomeSucceeded, Running: g.good, Apps: apps(d, app.PhaseRunning)})
	}
	g.mu.Unlock()
}

// report publishes a status; g.mu is held.
func (g *Gateway) report(ctx context.Context, st app.Status) {
	st.Schema, st.Instance, st.Time = app.SchemaVersion, g.ID, time.Now().UTC()
	g.status = st
	g.history = append(g.history, st)
	b, _ := json.Marshal(st)
	_ = g.bus.Publish(ctx, &bus.Message{Topic: app.StatusTopic(g.ID), Payload: b, QoS: bus.AtLeastOnce, Retain: true, ContentType: "application/json"})
}

// Report publishes the current status again (a heartbeat).
func (g *Gateway) Report(ctx context.Context) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.taken > 0 {
		g.report(ctx, g.status)
	}
}

// Status returns the last status the gateway reported and every one before.
func (g *Gateway) Status() (app.Status, []app.Status) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.status, append([]app.Status(nil), g.history...)
}

// Running is the deployment the gateway's apps run (nil: none yet) and
// its document.
func (g *Gateway) Running() (*app.Ref, *app.Deployment) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.good, g.goodDoc
}

// Stop takes the gateway off its bus (its presence left as it was).
func (g *Gateway) Stop(ctx context.Context) error {
	g.mu.Lock()
	logs := g.logsSub
	g.mu.Unlock()
	if logs != nil {
		_ = logs.Unsubscribe(ctx)
	}
	return g.sub.Unsubscribe(ctx)
}

// SetLogs gives the gateway log lines to answer logs requests with
// (app.LogsTopic), by app; an app it has none of is answered NotFound,
// as a gateway answers. The first call subscribes.
func (g *Gateway) SetLogs(ctx context.Context, lines map[string][]app.LogLine) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.logs = lines
	if g.logsSub != nil {
		return nil
	}
	sub, err := g.bus.Subscribe(ctx, app.LogsTopic(g.ID), g.answerLogs, &bus.SubscribeOptions{QoS: bus.AtLeastOnce})
	if err != nil {
		return fmt.Errorf("gateway %s: %w", g.ID, err)
	}
	g.logsSub = sub
	return nil
}

func (g *Gateway) answerLogs(ctx context.Context, m *bus.Message) {
	if !strings.HasPrefix(m.ResponseTopic, app.RepliesPrefix(g.ID)) {
		return // replies go nowhere else
	}
	var req app.LogsRequest
	reply := &bus.Message{Topic: m.ResponseTopic, CorrelationData: m.CorrelationData, QoS: bus.AtLeastOnce, ContentType: "application/json"}
	var lines []app.LogLine
	ok := false
	g.mu.Lock()
	if json.Unmarshal(m.Payload, &req) == nil {
		lines, ok = g.logs[req.App]
	}
	conn := g.bus
	g.mu.Unlock()
	if !ok {
		reply.UserProperties = busrr.ErrorProperties("no such app on this gateway: "+strconv.Quote(req.App), "NotFound")
	} else {
		reply.Payload, _ = json.Marshal(app.LogsReply{App: req.App, Kind: app.KindFunction, Lines: lines})
	}
	_ = conn.Publish(ctx, reply)
}
