// Command native is an edgekit-native Go function for the host's tests
// (function/native.Start). TEST_BEHAVIOUR: echo (default), error, panic,
// sleep, exit (during the invocation), bench (echo, nothing else), leak
// (touches 512 MB), setsid (starts itself again as a child in a session of
// its own that sleeps, and answers with the child's pid), many-metrics
// (reports 10,000 metrics of distinct names, then "last").
package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/edgekit/edgekit/function/native"
)

func main() {
	behaviour := os.Getenv("TEST_BEHAVIOUR")
	if behaviour == "child-sleep" {
		time.Sleep(time.Hour)
		return
	}
	native.Start(func(ctx context.Context, event []byte) ([]byte, error) {
		switch behaviour {
		case "error":
			return nil, errors.New("native failure")
		case "panic":
			panic("native panic")
		case "sleep":
			<-ctx.Done()
			time.Sleep(time.Hour)
		case "bench":
			return event, nil
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
	})
}
