package edge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/function/logstore"
	"github.com/edgekit/edgekit/internal/busrr"
)

// ErrNoApp: a logs request names an app the gateway does not run.
var ErrNoApp = errors.New("no such app on this gateway")

// serveLogs answers the central side's requests for an app's recent log
// lines (app.LogsTopic), replying only under app.RepliesPrefix: the fleet
// fetches a gateway's logs on demand through the upstream broker, as it
// reaches no gateway directly.
func (g *Gateway) serveLogs(ctx context.Context) (*busrr.Server, error) {
	id := g.opts.Instance
	return busrr.Serve(ctx, g.parts.bus, app.LogsTopic(id), g.answerLogs, &busrr.Options{Concurrency: 4, MaxPayload: 4 << 10,
		ResponsePrefix: app.RepliesPrefix(id), Logger: g.log,
		ErrorType: func(err error) string {
			if errors.Is(err, ErrNoApp) {
				return "NotFound"
			}
			return "Error"
		}})
}

// maxLogsReply bounds a reply's payload: lines are dropped from the
// oldest to fit.
const maxLogsReply = 512 << 10

func (g *Gateway) answerLogs(ctx context.Context, m *bus.Message) (busrr.Answer, error) {
	var req app.LogsRequest
	dec := json.NewDecoder(bytes.NewReader(m.Payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return busrr.Answer{}, fmt.Errorf("%w: a logs request: %v", busrr.ErrBadRequest, err)
	}
	if req.Limit <= 0 {
		req.Limit = 200
	}
	req.Limit = min(req.Limit, app.MaxLogLines)
	var kind app.Kind
	for _, a := range g.parts.reconciler.Status().Apps {
		if a.App == req.App && a.Phase != app.PhaseRemoved {
			kind = a.Kind
		}
	}
	reply := app.LogsReply{App: req.App, Kind: kind, Lines: []app.LogLine{}}
	switch kind {
	case app.KindFunction:
		recs, err := g.parts.functions.Logs(logstore.Query{Function: req.App, Contains: req.Contains, Limit: req.Limit})
		if err != nil {
			return busrr.Answer{}, fmt.Errorf("the logs of %s: %w", req.App, err)
		}
		for _, r := range slices.Backward(recs) { // oldest first
			text := r.Message
			for _, k := range slices.Sorted(maps.Keys(r.Attrs)) {
				text += " " + k + "=" + r.Attrs[k]
			}
			reply.Lines = append(reply.Lines, logLine(app.LogLine{Time: r.Time, Level: r.Level.String()}, text))
		}
	case app.KindContainer:
		if g.parts.containers == nil {
			return busrr.Answer{}, fmt.Errorf("%w: %s (no container runtime)", ErrNoApp, req.App)
		}
		var out bytes.Buffer
		w := &capped{buf: &out, max: maxLogsReply}
		if err := g.parts.containers.Logs(ctx, req.App, container.LogOptions{Tail: req.Limit}, w); err != nil {
			return busrr.Answer{}, fmt.Errorf("the logs of %s: %w", req.App, err)
		}
		sc := bufio.NewScanner(&out)
		sc.Buffer(make([]byte, 64<<10), maxLogsReply)
		for sc.Scan() {
			if req.Contains == "" || strings.Contains(sc.Text(), req.Contains) {
				reply.Lines = append(reply.Lines, logLine(app.LogLine{}, sc.Text()))
			}
		}
	default:
		return busrr.Answer{}, fmt.Errorf("%w: %q", ErrNoApp, req.App)
	}
	b, _ := json.Marshal(reply)
	for len(b) > maxLogsReply && len(reply.Lines) > 0 {
		reply.Lines = reply.Lines[len(reply.Lines)/4+1:]
		b, _ = json.Marshal(reply)
	}
	return busrr.Answer{Payload: b, ContentType: "application/json"}, nil
}

// logLine is l with text, cut to app.MaxLogLine bytes.
func logLine(l app.LogLine, text string) app.LogLine {
	if len(text) > app.MaxLogLine {
		text, l.Cut = strings.ToValidUTF8(text[:app.MaxLogLine], ""), true
	}
	l.Text = text
	return l
}

// capped writes up to max bytes into buf and drops the rest.
type capped struct {
	buf *bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
