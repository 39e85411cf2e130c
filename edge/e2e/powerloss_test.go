package e2e_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/container/podman"
	"github.com/edgekit/edgekit/edge"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/fleet/fleettest"
	"github.com/edgekit/edgekit/internal/gatewaytest"
	"github.com/edgekit/edgekit/internal/testenv"
)

func TestMain(m *testing.M) {
	if fleettest.SimulationMain() { // the simulated gateways of TestWebConsoleAtScale
		return
	}
	if dir := os.Getenv("EDGEKIT_E2E_CHILD"); dir != "" {
		containerGateway(dir, os.Getenv("EDGEKIT_E2E_PODMAN"))
		return
	}
	os.Exit(m.Run())
}

// containerGateway is the gateway TestPowerLossContainers kills.
func containerGateway(dir, url string) {
	rt, err := podman.Connect(context.Background(), url)
	if err == nil {
		var g *edge.Gateway
		g, err = edge.New(&edge.Options{DataDir: dir, Instance: "gw-plc", DeploymentFile: "-", ContainerRuntime: rt,
			Containers: &container.ManagerOptions{RestartMin: 100 * time.Millisecond, RestartMax: time.Second},
			API:        &edge.APIOptions{Address: "-", Socket: filepath.Join(dir, "api.sock")}})
		if err == nil {
			err = g.Run(context.Background())
		}
	}
	fmt.Println("gateway:", err)
	os.Exit(1)
}

// TestPowerLossContainers kills the gateway with SIGKILL at random points
// of 12 deployments of a container app — upgrades, an upgrade that never
// becomes healthy and is rolled back, probation — and starts it again
// each time: every restart converges to the deployment before or the one
// submitted, and the app has exactly one container, of that deployment's
// version.
func TestPowerLossContainers(t *testing.T) {
	ctx := context.Background()
	svc, rt := privatePodman(t)
	dir := filepath.Join(t.TempDir(), "data")
	web := func(version string, healthy bool) app.Assignment {
		probe := []string{"/testprog", "echo", "ok"}
		if !healthy {
			probe = []string{"/testprog", "exit", "1"}
		}
		return app.Assignment{App: app.App{Name: "web", Kind: app.KindContainer}, Version: app.Version{Version: version,
			Container: &app.ContainerVersion{Image: image, Spec: app.ContainerSpec{Command: []string{"/testprog"}, NetworkMode: "none",
				Env: map[string]string{"VERSION": version}, StopGrace: app.Duration(time.Second)},
				Health: &app.Probe{Exec: probe, Interval: app.Duration(100 * time.Millisecond)}},
			// A version has 3 s to be healthy: with both cores busy,
			// podman took over 1 s to start one and bring its first
			// probe back, and the rollback to it failed.
			Probation: app.Duration(3 * time.Second)}}
	}
	shapes := [][]app.Assignment{{web("1", true)}, {web("2", true)}, {web("3", false)}}
	submitted := map[uint64][]app.Assignment{}

	child := gatewaytest.Start(t, dir, "EDGEKIT_E2E_CHILD="+dir, "EDGEKIT_E2E_PODMAN="+svc.URL)
	prev := uint64(0)
	for round := range 12 {
		rev := uint64(round + 1)
		apps := shapes[round%len(shapes)]
		child.Submit(&app.Deployment{Schema: 1, ID: fmt.Sprintf("round-%d", round), Revision: rev, Apps: apps})
		submitted[rev] = apps
		// The kill lands as a step begins, drawn at random: the new
		// container starting, in probation, or (the version that never
		// becomes healthy) failed, the rollback starting.
		targets := []app.Phase{app.PhaseStarting, app.PhaseProbation}
		if round%len(shapes) == 2 {
			targets = append(targets, app.PhaseFailed)
		}
		child.AwaitPhase(targets[rand.IntN(len(targets))])
		child.Restart()

		st := child.Settled(fmt.Sprintf("round %d converging", round))
		running := gatewaytest.RunningRevision(st)
		if running != rev && running != prev {
			t.Errorf("round %d: running revision %d, want %d or %d: %+v", round, running, rev, prev, st)
		}
		prev = running
		want := ""
		for _, a := range submitted[running] {
			want = a.Version.Version
		}
		// Exactly one container of the app, of the running version, once
		// the manager has settled.
		var list []container.Container
		defer func() {
			if t.Failed() {
				for _, c := range list {
					t.Logf("container %s %s version %s state %s", c.ID[:12], c.Name, c.Labels[container.LabelVersion], c.State)
				}
				_, body := child.Call("GET", "/v1/containers", nil)
				t.Logf("the manager: %s; status %+v", body, st)
			}
		}()
		testenv.EventuallyWithin(t, fmt.Sprintf("round %d: one container of web, version %q", round, want), time.Minute, func() bool {
			var err error
			if list, err = rt.List(ctx, map[string]string{container.LabelApp: "web"}); err != nil {
				return false
			}
			if want == "" {
				return len(list) == 0
			}
			return len(list) == 1 && list[0].Labels[container.LabelVersion] == want && list[0].State == container.Running
		})
	}
}
