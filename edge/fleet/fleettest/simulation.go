package fleettest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edgekit/edgekit/internal/mqttlite"
)

// The environment of a simulation child: the broker's host:port and how
// many gateways to run.
const (
	simAddrEnv = "EDGEKIT_FLEET_SIM"
	simNEnv    = "EDGEKIT_FLEET_SIM_N"
)

// StartSimulation runs n simulated gateways named sim-00000 … on the MQTT
// broker at addr (host:port), in a child process: the test binary run
// again, whose TestMain calls SimulationMain. Each has one MQTT connection
// (package mqttlite: a goroutine each, so that 10,000 fit in a process),
// announces itself online, takes its desired documents and succeeds, and
// connects again when its connection is lost. It returns when all are
// connected; the child stops when the test ends.
func StartSimulation(tb testing.TB, addr string, n int) {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), simAddrEnv+"="+addr, simNEnv+"="+strconv.Itoa(n))
	stdin, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		tb.Fatalf("the simulation: %q %v", line, err)
	}
}

// SimulationMain is for a TestMain: in a child of StartSimulation it runs
// the simulation until its parent closes its stdin and reports true (the
// TestMain then returns); elsewhere it reports false at once.
func SimulationMain() bool {
	addr := os.Getenv(simAddrEnv)
	if addr == "" {
		return false
	}
	n, _ := strconv.Atoi(os.Getenv(simNEnv))
	if err := simulate(addr, n); err != nil {
		fmt.Println("simulation:", err) // the parent reads it instead of "ready"
	}
	return true
}

func simulate(addr string, n int) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var eg errgroup.Group
	eg.SetLimit(64)
	var mu sync.Mutex
	var conns []*mqttlite.Client
	var keepers sync.WaitGroup
	for i := range n {
		eg.Go(func() error {
			id := fmt.Sprintf("sim-%05d", i)
			c, err := mqttlite.Dial(ctx, addr, id)
			if err != nil {
				return fmt.Errorf("dial %s: %w", id, err)
			}
			g, err := Start(ctx, id, c, nil)
			if err != nil {
				return fmt.Errorf("start %s: %w", id, err)
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			// A lost connection (the broker restarted) is made again, as
			// a gateway would.
			keepers.Add(1)
			go func() {
				defer keepers.Done()
				retry := time.NewTicker(50 * time.Millisecond)
				defer retry.Stop()
				for {
					select {
					case <-c.Done():
					case <-ctx.Done():
						return
					}
					for {
						if c, err = mqttlite.Dial(ctx, addr, id); err == nil {
							if err = g.Reconnect(ctx, c); err == nil {
								break
							}
							_ = c.Close(ctx)
						}
						select {
						case <-retry.C:
						case <-ctx.Done():
							return
						}
					}
				}
			}()
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return err
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	cancel()
	mu.Lock()
	for _, c := range conns {
		_ = c.Close(context.Background())
	}
	mu.Unlock()
	keepers.Wait()
	return nil
}
