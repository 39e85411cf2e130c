// Command lambda is a function built on aws-lambda-go for the host's
// tests. TEST_BEHAVIOUR picks what it does: echo (default), error, panic,
// sleep, exit-at-start, exit-soon (0.3 s after starting), spawn-and-hang,
// big, leak (512 MB), bench (returns the event, prints nothing), and event:
// the event's "do" field picks what it does (see byEvent).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/edgekit/edgekit/function/internal/testfunctions/serviceenv"
)

func main() {
	behaviour := os.Getenv("TEST_BEHAVIOUR")
	if behaviour == "exit-at-start" {
		os.Stderr.WriteString("refusing to start\n")
		os.Exit(3)
	}
	if behaviour == "exit-soon" {
		go func() {
			time.Sleep(300 * time.Millisecond)
			os.Stderr.WriteString("giving up\n")
			os.Exit(4)
		}()
	}
	if behaviour == "bench" {
		lambda.Start(func(ctx context.Context, ev json.RawMessage) (json.RawMessage, error) { return ev, nil })
		return
	}
	if behaviour == "event" {
		lambda.Start(byEvent)
		return
	}
	lambda.Start(func(ctx context.Context, ev json.RawMessage) (any, error) {
		lc, _ := lambdacontext.FromContext(ctx)
		deadline, _ := ctx.Deadline()
		println("handling", lc.AwsRequestID) // a line on stderr
		switch behaviour {
		case "error":
			return nil, errors.New("bad input: " + string(ev))
		case "panic":
			panic("handler panicked")
		case "sleep":
			time.Sleep(time.Hour)
		case "spawn-and-hang":
			cmd := exec.Command("sleep", "1000")
			if err := cmd.Start(); err != nil {
				return nil, err
			}
			os.WriteFile(os.Getenv("CHILD_PID_FILE"), []byte(strings.TrimSpace(itoa(cmd.Process.Pid))), 0o644)
			time.Sleep(time.Hour)
		case "big":
			return strings.Repeat("x", 7<<20), nil
		case "leak":
			var keep [][]byte
			for range 64 { // 512 MB, each page touched
				b := make([]byte, 8<<20)
				for i := 0; i < len(b); i += 4096 {
					b[i] = 1
				}
				keep = append(keep, b)
			}
			return len(keep), nil
		}
		return map[string]any{
			"event":       ev,
			"request_id":  lc.AwsRequestID,
			"arn":         lc.InvokedFunctionArn,
			"custom":      lc.ClientContext.Custom,
			"function":    lambdacontext.FunctionName,
			"version":     lambdacontext.FunctionVersion,
			"memory":      lambdacontext.MemoryLimitInMB,
			"log_group":   lambdacontext.LogGroupName,
			"log_stream":  lambdacontext.LogStreamName,
			"deadline_in": time.Until(deadline).Milliseconds(),
			"config":      os.Getenv("EDGEKIT_FUNCTION_CONFIG"),
			"trace":       os.Getenv("_X_AMZN_TRACE_ID"),
			"extra_env":   os.Getenv("EXTRA"),
			"env":         serviceenv.Read(),
			"pid":         os.Getpid(),
			"uid":         os.Getuid(),
			"gid":         os.Getgid(),
		}, nil
	})
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

type event struct {
	Do      string
	PIDFile string // where setsid-* write their child's pid
	Max     int    // fork-bomb: children to try
	For     string // hold: how long ("150ms")
	// steal: whose runtime API to try (Addr, or the one in the
	// environment of process PID) and the invocation to answer.
	Addr      string
	PID       int
	RequestID string
}

// byEvent does what the event's "do" says: panic; sleep; exit (os.Exit
// during the invocation); setsid-hang and setsid-exit (start a child in a
// session of its own that holds stdout and stderr, write its pid, then
// hang or exit); fork-bomb (start children, each in a session of its own,
// until it fails or has Max, and answer with their pids and the error);
// steal (see steal); hold (answer after For); open-fds (which of process PID's descriptors it can
// open through /proc); anything else echoes.
func byEvent(ctx context.Context, ev event) (any, error) {
	switch ev.Do {
	case "panic":
		panic("asked to panic")
	case "sleep":
		time.Sleep(time.Hour)
	case "hold":
		d, err := time.ParseDuration(ev.For)
		if err != nil {
			return nil, err
		}
		time.Sleep(d)
		return "held", nil
	case "exit":
		os.Exit(5)
	case "setsid-hang", "setsid-exit":
		cmd := exec.Command("sleep", "1000")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		if err := os.WriteFile(ev.PIDFile, []byte(itoa(cmd.Process.Pid)), 0o644); err != nil {
			return nil, err
		}
		if ev.Do == "setsid-exit" {
			os.Exit(6)
		}
		time.Sleep(time.Hour)
	case "steal":
		return steal(ev), nil
	case "open-fds":
		// Which of process PID's descriptors 0-31 this process can open
		// through /proc.
		var opened []int
		for fd := range 32 {
			if f, err := os.Open("/proc/" + itoa(ev.PID) + "/fd/" + itoa(fd)); err == nil {
				f.Close()
				opened = append(opened, fd)
			}
		}
		return map[string]any{"opened": opened}, nil
	case "fork-bomb":
		var pids []int
		var failure string
		for range ev.Max {
			cmd := exec.Command("sleep", "1000")
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			if err := cmd.Start(); err != nil {
				failure = err.Error()
				break
			}
			pids = append(pids, cmd.Process.Pid)
		}
		return map[string]any{"pids": pids, "error": failure}, nil
	}
	return ev, nil
}

// steal tries to take another instance's invocation: it takes the runtime
// API address from ev.Addr, or from the environment of process ev.PID;
// then asks /next, and posts a response for ev.RequestID. It answers what
// each step got: "read" or the error for the environment, and the status
// code or the error of each request.
func steal(ev event) map[string]any {
	out := map[string]any{}
	addr := ev.Addr
	if addr == "" {
		env, err := os.ReadFile("/proc/" + itoa(ev.PID) + "/environ")
		if err != nil {
			out["environ"] = err.Error()
			return out
		}
		out["environ"] = "read"
		for _, kv := range strings.Split(string(env), "\x00") {
			if v, ok := strings.CutPrefix(kv, "AWS_LAMBDA_RUNTIME_API="); ok {
				addr = v
			}
		}
	}
	client := &http.Client{Timeout: 3 * time.Second}
	base := "http://" + addr + "/2018-06-01/runtime/invocation/"
	ask := func(req *http.Request, err error) any {
		if err != nil {
			return err.Error()
		}
		resp, err := client.Do(req)
		if err != nil {
			return err.Error() // a timeout: /next handed nothing out
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	out["next"] = ask(http.NewRequest(http.MethodGet, base+"next", nil))
	out["response"] = ask(http.NewRequest(http.MethodPost, base+ev.RequestID+"/response", strings.NewReader(`"forged"`)))
	return out
}
