// Command native is an edgekit-native Go function for the host's tests
// (function/native.Start). TEST_BEHAVIOUR: echo (default), error, panic,
// sleep, exit (during the invocation), bench (echo, nothing else), leak
// (touches 512 MB), setsid (starts itself again as a child in a session of
// its own that sleeps, and answers with the child's pid), many-metrics
// (reports 10,000 metrics of distinct names, then "last"), api (makes the
// gateway API call the event names, answers what it got: see callAPI),
// driver (the test thermometers as a native.Driver: see thermometers).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/edgekit/edgekit/function/fnapi"
	"github.com/edgekit/edgekit/function/native"
)

func main() {
	behaviour := os.Getenv("TEST_BEHAVIOUR")
	if behaviour == "child-sleep" {
		time.Sleep(time.Hour)
		return
	}
	// A changed configuration is published on outputs/{name}/config.
	onConfig := func(ctx context.Context, cfg json.RawMessage) {
		if err := native.Publish(ctx, "outputs/"+os.Getenv("AWS_LAMBDA_FUNCTION_NAME")+"/config", cfg, nil); err != nil {
			fmt.Fprintln(os.Stderr, "publishing the configuration:", err)
		}
	}
	opts := &native.Options{OnConfig: onConfig}
	if behaviour == "driver" {
		opts.Driver = &thermometers{things: map[string]*thermometer{}}
	}
	native.StartWith(func(ctx context.Context, event []byte) ([]byte, error) {
		switch behaviour {
		case "driver":
			return driverCall(ctx, event)
		case "error":
			return nil, errors.New("native failure")
		case "panic":
			panic("native panic")
		case "sleep":
			<-ctx.Done()
			time.Sleep(time.Hour)
		case "bench":
			return event, nil
		case "hold":
			// Takes as long as the event says ("150ms"), past an
			// earlier invocation's deadline.
			d, err := time.ParseDuration(string(event))
			if err != nil {
				return nil, err
			}
			time.Sleep(d)
			return []byte(`"held"`), nil
		case "api":
			return callAPI(ctx, event)
		case "many-metrics":
			for i := range 10_000 {
				native.Metric(ctx, "metric-"+strconv.Itoa(i), float64(i))
			}
			native.Metric(ctx, "last", 1)
			return []byte(`"sent"`), nil
		case "exit":
			os.Exit(3)
		case "setsid":
			exe, err := os.Executable()
			if err != nil {
				return nil, err
			}
			cmd := exec.Command(exe)
			cmd.Env = append(os.Environ(), "TEST_BEHAVIOUR=child-sleep")
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			if err := cmd.Start(); err != nil {
				return nil, err
			}
			return json.Marshal(cmd.Process.Pid)
		case "leak":
			// In steps, each touched: a memory limit, not the
			// machine's size, is what stops it.
			var hog [][]byte
			for range 32 {
				chunk := make([]byte, 16<<20)
				for i := 0; i < len(chunk); i += 4096 {
					chunk[i] = 1
				}
				hog = append(hog, chunk)
			}
			return json.Marshal(len(hog))
		}
		inv, _ := native.FromContext(ctx)
		native.Metric(ctx, "calls", 1)
		deadline, _ := ctx.Deadline()
		return json.Marshal(map[string]any{"event": json.RawMessage(event), "inv": inv, "deadline_ok": time.Until(deadline) > 0})
	}, opts)
}

// apiCall is the event of behaviour api: which call, with what.
type apiCall struct {
	Call     string            `json:"call"` // publish, concurrent, invoke, invoke-async, get, set, service, list, log, config, late
	Topic    string            `json:"topic"`
	Payload  string            `json:"payload"`
	QoS      byte              `json:"qos"`
	Function string            `json:"function"`
	Device   string            `json:"device"`
	IDs      []string          `json:"ids"`
	Values   map[string]any    `json:"values"`
	Service  string            `json:"service"`
	Labels   map[string]string `json:"labels"` // list: the labels to keep
	Repeat   int               `json:"repeat"` // publish: this many messages, payloads numbered; get: this many reads
	NoWait   bool              `json:"noWait"` // publish: without waiting, then flush
}

// callAPI makes the call and answers {"answer": ...} or {"error": {"type", "message", "is"}},
// "is" naming the fnapi sentinel errors.Is matches.
func callAPI(ctx context.Context, event []byte) ([]byte, error) {
	var c apiCall
	if err := json.Unmarshal(event, &c); err != nil {
		return nil, err
	}
	var answer any
	var err error
	switch c.Call {
	case "publish":
		for i := range max(c.Repeat, 1) {
			p := c.Payload
			if c.Repeat > 0 {
				p = strconv.Itoa(i)
			}
			if err = native.Publish(ctx, c.Topic, []byte(p), &native.PublishOptions{QoS: c.QoS, UserProperties: [][2]string{{"from", "native"}}, NoWait: c.NoWait}); err != nil {
				break
			}
		}
		if err == nil && c.NoWait {
			err = native.Flush(ctx)
		}
	case "concurrent":
		// Eight goroutines publish at once: the answers reach each.
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range max(c.Repeat, 1) {
					if err := native.Publish(ctx, c.Topic, []byte(strconv.Itoa(g*1000+i)), nil); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		err = <-errs
	case "invoke":
		var out []byte
		out, err = native.Invoke(ctx, c.Function, []byte(c.Payload))
		answer = json.RawMessage(out)
	case "invoke-async":
		err = native.InvokeAsync(ctx, c.Function, []byte(c.Payload))
	case "get":
		for range max(c.Repeat, 1) {
			if answer, err = native.GetProperties(ctx, c.Device, c.IDs...); err != nil {
				break
			}
		}
	case "set":
		var res map[string]error
		if res, err = native.SetProperties(ctx, c.Device, c.Values); err == nil {
			why := map[string]any{}
			for id, e := range res {
				why[id] = nil
				if e != nil {
					why[id] = e.Error()
				}
			}
			answer = why
		}
	case "service":
		answer, err = native.CallService(ctx, c.Device, c.Service, c.Values)
	case "list":
		answer, err = native.ListDevices(ctx, c.Labels)
	case "log":
		native.Log(ctx, slog.LevelWarn, c.Payload)
	case "config":
		var cfg json.RawMessage
		cfg, err = native.Config(ctx)
		answer = cfg
	case "late":
		// A goroutine that kept the invocation's context calls after
		// the deadline.
		late, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Millisecond))
		defer cancel()
		err = native.Publish(late, c.Topic, nil, nil)
	default:
		return nil, errors.New("unknown call " + c.Call)
	}
	if err != nil {
		var fe *fnapi.Error
		errors.As(err, &fe)
		is := ""
		for _, s := range []error{fnapi.ErrForbidden, fnapi.ErrBadRequest, fnapi.ErrTimeout, fnapi.ErrUnavailable, fnapi.ErrUnknownFunction,
			fnapi.ErrUnknownDevice, fnapi.ErrInvalidValue, fnapi.ErrReadOnly, fnapi.ErrUnknownService} {
			if errors.Is(err, s) {
				is = s.Error()
			}
		}
		e := map[string]any{"message": err.Error(), "is": is}
		if fe != nil {
			e["type"], e["message"], e["stack"] = fe.Type, fe.Message, fe.Stack
		}
		return json.Marshal(map[string]any{"error": e})
	}
	return json.Marshal(map[string]any{"answer": answer})
}
