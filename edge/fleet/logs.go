package fleet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/function/spec"
	"github.com/edgekit/edgekit/internal/busrr"
)

// ErrNoAnswer: a gateway did not answer a request before its context
// ended (it is offline, or its link is slow).
var ErrNoAnswer = errors.New("the gateway did not answer")

// LogsWait bounds Logs' wait for a gateway's answer.
const LogsWait = 10 * time.Second

// Logs asks an instance for an app's recent log lines through the
// broker (app.LogsTopic, MQTT v5 request/response): the fleet reaches no
// gateway directly. It waits for the answer LogsWait at most, or until
// ctx ends (an offline gateway never answers): then ErrNoAnswer. A
// gateway's refusal (no such app) is ErrNotFound; other refusals carry
// the gateway's words.
func (f *Fleet) Logs(ctx context.Context, instance string, req app.LogsRequest) (app.LogsReply, error) {
	ctx, cancel := context.WithTimeout(ctx, LogsWait)
	defer cancel()
	if !ValidInstance(instance) {
		return app.LogsReply{}, fmt.Errorf("%w: instance id %q", ErrInvalid, instance)
	}
	if !spec.ValidName(req.App) {
		return app.LogsReply{}, fmt.Errorf("%w: app name %q", ErrInvalid, req.App)
	}
	corr := make([]byte, 12)
	_, _ = rand.Read(corr)
	topic := app.RepliesPrefix(instance) + "fleet-" + hex.EncodeToString(corr)
	got := make(chan *bus.Message, 1)
	sub, err := f.bus.Subscribe(ctx, topic, func(_ context.Context, m *bus.Message) {
		if bytes.Equal(m.CorrelationData, corr) {
			select {
			case got <- m:
			default:
			}
		}
	}, &bus.SubscribeOptions{QoS: bus.AtLeastOnce})
	if err != nil {
		return app.LogsReply{}, fmt.Errorf("fleet: the logs of %s on %s: %w", req.App, instance, err)
	}
	defer func() { _ = sub.Unsubscribe(context.WithoutCancel(ctx)) }()
	payload, _ := json.Marshal(req)
	if err := f.bus.Publish(ctx, &bus.Message{Topic: app.LogsTopic(instance), Payload: payload, QoS: bus.AtLeastOnce,
		ResponseTopic: topic, CorrelationData: corr, ContentType: "application/json"}); err != nil {
		return app.LogsReply{}, fmt.Errorf("fleet: the logs of %s on %s: %w", req.App, instance, err)
	}
	select {
	case m := <-got:
		if why, typ, failed := busrr.ReplyError(m); failed {
			if typ == "NotFound" {
				return app.LogsReply{}, fmt.Errorf("%w: %s on %s: %s", ErrNotFound, req.App, instance, why)
			}
			return app.LogsReply{}, fmt.Errorf("the logs of %s on %s: the gateway says: %s", req.App, instance, why)
		}
		var reply app.LogsReply
		if err := json.Unmarshal(m.Payload, &reply); err != nil {
			return app.LogsReply{}, fmt.Errorf("the logs of %s on %s: the gateway's answer does not read: %v", req.App, instance, err)
		}
		if len(reply.Lines) > app.MaxLogLines {
			reply.Lines = reply.Lines[len(reply.Lines)-app.MaxLogLines:]
		}
		return reply, nil
	case <-ctx.Done():
		return app.LogsReply{}, fmt.Errorf("%w: the logs of %s on %s: %w", ErrNoAnswer, req.App, instance, context.Cause(ctx))
	}
}
