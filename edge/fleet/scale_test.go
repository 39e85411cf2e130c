package fleet_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/broker"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/edge/fleet"
	"github.com/edgekit/edgekit/edge/fleet/fleettest"
	"github.com/edgekit/edgekit/edge/fleet/store"
	"github.com/edgekit/edgekit/edge/fleet/store/boltstore"
	"github.com/edgekit/edgekit/edge/fleet/store/pgstore"
	"github.com/edgekit/edgekit/internal/brokertest"
	"github.com/edgekit/edgekit/internal/pgtest"
	"github.com/edgekit/edgekit/internal/procstat"
	"github.com/edgekit/edgekit/internal/testenv"
)

func TestMain(m *testing.M) {
	if fleettest.SimulationMain() {
		return
	}
	if dsn := os.Getenv("EDGEKIT_FLEET_REPLICA"); dsn != "" {
		replica(dsn, os.Getenv("EDGEKIT_FLEET_BROKER"), os.Getenv("EDGEKIT_FLEET_REPLICA_NAME"))
		return
	}
	os.Exit(m.Run())
}

// replica is a child process of TestReplicas: a fleet on the PostgreSQL
// at dsn and the broker, keeping no broker session (a replica that dies
// leaves no share of the reports behind it). It says "leading" on stdout
// when it comes to hold the lease and "following" when it loses it, and
// runs until it is killed.
func replica(dsn, brokerURL, name string) {
	ctx := context.Background()
	st, err := pgstore.Open(ctx, dsn, nil)
	if err != nil {
		fmt.Println("store:", err)
		os.Exit(1)
	}
	dir, _ := os.MkdirTemp("", "fleet-replica-")
	defer os.RemoveAll(dir)
	b, err := mqttbus.New(&mqttbus.Options{Brokers: []string{brokerURL}, ClientID: name, SessionExpiry: -1, QueueDir: dir})
	if err != nil {
		fmt.Println("bus:", err)
		os.Exit(1)
	}
	f, err := fleet.New(&fleet.Options{Store: st, Bus: b, Replica: name, Tick: 50 * time.Millisecond, LeaseTTL: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		fmt.Println("fleet:", err)
		os.Exit(1)
	}
	go func() {
		poll := time.NewTicker(10 * time.Millisecond)
		defer poll.Stop()
		leading := false
		for range poll.C {
			if now := f.Leader(); now != leading {
				leading = now
				if leading {
					fmt.Println("leading")
				} else {
					fmt.Println("following")
				}
			}
		}
	}()
	_ = f.Run(ctx)
	os.Exit(0)
}

// scale runs a rollout of one function version to n simulated gateways
// and returns how long it took from Deploy until every target succeeded,
// and the fleet process's CPU time and peak RSS over it.
type scaleResult struct {
	rollout, cpu time.Duration
	peakRSSKB    int64
	baseline     time.Duration // the broker taking n QoS 1 retained publishes from one client
}

func runScale(tb testing.TB, n int, st store.Store) scaleResult {
	tb.Helper()
	ctx := context.Background()
	b := brokertest.Start(tb, &broker.Options{MaxConnections: -1, MaxQueuedMessages: 100_000})
	fleetBus := brokertest.Connect(tb, b, mqttbus.Options{ClientID: "fleet"})
	fleettest.StartSimulation(tb, b.URL().Host, n)

	// The baseline, in the same run: one client publishing n retained
	// QoS 1 documents of the same size to topics nobody reads.
	doc := make([]byte, 900)
	start := time.Now()
	var g errgroup.Group
	g.SetLimit(64)
	for i := range n {
		g.Go(func() error {
			return fleetBus.Publish(ctx, &bus.Message{Topic: fmt.Sprintf("bench/baseline/%d", i), Payload: doc, QoS: bus.AtLeastOnce, Retain: true})
		})
	}
	if err := g.Wait(); err != nil {
		tb.Fatalf("the baseline's publishes: %v", err)
	}
	res := scaleResult{baseline: time.Since(start)}

	f, err := fleet.New(&fleet.Options{Store: st, Bus: fleetBus, Tick: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		tb.Fatal(err)
	}
	fleettest.Run(tb, f)
	testenv.EventuallyWithin(tb, fmt.Sprintf("%d instances registered by their presence", n), 2*time.Minute, func() bool {
		ins, _ := f.Instances(ctx)
		return len(ins) == n
	})
	if _, err := f.CreateApp(ctx, fleet.App{Name: "alarm", Kind: app.KindFunction}); err != nil {
		tb.Fatal(err)
	}
	if _, err := f.AddVersion(ctx, "alarm", functionVersion("1")); err != nil {
		tb.Fatal(err)
	}
	cpu0 := cpuTime()
	start = time.Now()
	if _, err := f.Deploy(ctx, fleet.Deployment{ID: "all", Apps: []fleet.AppVersion{{App: "alarm", Version: "1"}},
		Policy: fleet.Policy{Waves: []fleet.Wave{{Percent: 10}, {Percent: 100}}}}); err != nil {
		tb.Fatal(err)
	}
	var ts []fleet.Target
	var d fleet.Deployment
	last := time.Now()
	if !testenv.Await(5*time.Minute, func() bool {
		d, ts, err = f.Deployment(ctx, "all")
		if time.Since(last) > 10*time.Second {
			last = time.Now()
			tb.Logf("after %v: deployment %s wave %d of %v, targets by state %v", time.Since(start).Round(time.Second), d.State, d.Wave, d.Waves, countStates(ts))
		}
		return err == nil && d.State == fleet.DeploymentSucceeded
	}) {
		tb.Fatalf("the rollout to every instance did not finish in 5 min: deployment %s (%s) wave %d of %v, targets by state %v", d.State, d.Reason, d.Wave, d.Waves, countStates(ts))
	}
	res.rollout, res.cpu = time.Since(start), cpuTime()-cpu0
	res.peakRSSKB = procstat.KB(0, "VmHWM")
	ok := 0
	for _, t := range ts {
		if t.State == fleet.TargetSucceeded {
			ok++
		}
	}
	if len(ts) != n || ok != n {
		tb.Fatalf("%d targets, %d succeeded, want %d", len(ts), ok, n)
	}
	ins, _ := f.Instances(ctx)
	current := 0
	for _, in := range ins {
		if in.Current && in.Running == "all" {
			current++
		}
	}
	if current != n {
		tb.Fatalf("%d of %d instances reported on the deployment's revision", current, n)
	}
	return res
}

func countStates(ts []fleet.Target) map[fleet.TargetState]int {
	m := map[fleet.TargetState]int{}
	for _, t := range ts {
		m[t.State]++
	}
	return m
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestFailover: a rollout to 200 simulated gateways, spread over some 20
// s by MaxPerMinute, survives what production throws at it midway, and
// ends with every target succeeded and every report in:
//
//   - replicas: two fleet replicas on one PostgreSQL share the reports
//     through the broker's shared subscription; the lease holder is
//     SIGKILLed and the other takes the lease, reads the retained reports
//     and finishes;
//   - restarted: the only fleet process is SIGKILLed and started again,
//     and goes on from the store where it was;
//   - broker: Mosquitto is SIGKILLed (edge/broker starts it again); the
//     fleet and the gateways connect again and the rollout goes on.
func TestFailover(t *testing.T) {
	for _, mode := range []string{"replicas", "restarted", "broker"} {
		// 600 a minute: the rollout takes some 20 s, long enough to strike in.
		t.Run(mode, func(t *testing.T) { failover(t, mode, 200, 600) })
	}
}

// failover runs a rollout to n simulated gateways, at most perMinute
// started a minute (0: no limit), strikes the fault of mode once a fifth
// of them have succeeded, and checks the rollout then finishes with every
// report in. It returns how long the rollout took from Deploy.
func failover(t testing.TB, mode string, n, perMinute int) time.Duration {
	ctx := context.Background()
	b := brokertest.Start(t, &broker.Options{MaxConnections: -1, MaxQueuedMessages: 100_000, AutosaveInterval: time.Second})
	pg := pgtest.Start(t)
	st, err := pgstore.Open(ctx, pg.DSN, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	exe, _ := os.Executable()
	type child struct {
		cmd      *exec.Cmd
		leading  atomic.Bool // as it last said
		handover atomic.Int32
	}
	start := func(name string) *child {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), "EDGEKIT_FLEET_REPLICA="+pg.DSN, "EDGEKIT_FLEET_BROKER="+b.URL().String(), "EDGEKIT_FLEET_REPLICA_NAME="+name)
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c := &child{cmd: cmd}
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				switch sc.Text() {
				case "leading":
					c.leading.Store(true)
				case "following":
					c.leading.Store(false)
					c.handover.Add(1)
				}
			}
		}()
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return c
	}
	replicas := map[string]*child{"replica-a": start("replica-a")}
	if mode == "replicas" {
		replicas["replica-b"] = start("replica-b")
	}
	fleettest.StartSimulation(t, b.URL().Host, n)
	// The test's own fleet only calls the API (it is not Run): the
	// replicas do the work.
	api, err := fleet.New(&fleet.Options{Store: st, Bus: membus.New(nil)})
	if err != nil {
		t.Fatal(err)
	}
	testenv.EventuallyWithin(t, "every instance registered", 2*time.Minute, func() bool {
		ins, _ := api.Instances(ctx)
		return len(ins) == n
	})
	if _, err := api.CreateApp(ctx, fleet.App{Name: "alarm", Kind: app.KindFunction}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.AddVersion(ctx, "alarm", functionVersion("1")); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if _, err := api.Deploy(ctx, fleet.Deployment{ID: "all", Apps: []fleet.AppVersion{{App: "alarm", Version: "1"}},
		Policy: fleet.Policy{Waves: []fleet.Wave{{Percent: 10}, {Percent: 100}}, MaxPerMinute: perMinute}}); err != nil {
		t.Fatal(err)
	}
	succeeded := func() int {
		_, ts, _ := api.Deployment(ctx, "all")
		return countStates(ts)[fleet.TargetSucceeded]
	}
	testenv.EventuallyWithin(t, "the rollout under way", 2*time.Minute, func() bool { return succeeded() >= n/5 })
	var leader string
	testenv.EventuallyWithin(t, "a replica holding the lease", time.Minute, func() bool {
		for name, c := range replicas {
			if c.leading.Load() {
				leader = name
				return true
			}
		}
		return false
	})
	done := succeeded()
	if done >= n {
		t.Fatalf("the rollout was over before the fault (%d of %d)", done, n)
	}
	switch mode {
	case "replicas", "restarted":
		_ = replicas[leader].cmd.Process.Kill()
		_ = replicas[leader].cmd.Wait()
		killed := time.Now()
		t.Logf("killed %s, the lease holder, %v after Deploy with %d of %d succeeded", leader, killed.Sub(began).Round(time.Millisecond), done, n)
		defer func() { t.Logf("the rollout finished %v after the kill", time.Since(killed).Round(time.Millisecond)) }()
		next := "replica-b"
		if leader == next {
			next = "replica-a"
		}
		if mode == "restarted" {
			replicas[leader] = start(leader) // the same name: it takes its own lease back
			next = leader
		}
		testenv.EventuallyWithin(t, next+" taking the lease", time.Minute, func() bool { return replicas[next].leading.Load() })
		t.Logf("%s took the lease %v after the kill", next, time.Since(killed).Round(time.Millisecond))
	case "broker":
		pid := b.Status().PID
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		t.Logf("killed Mosquitto with %d of %d succeeded", done, n)
		testenv.EventuallyWithin(t, "Mosquitto started again", time.Minute, func() bool {
			st := b.Status()
			return st.PID != pid && st.State == broker.StateRunning
		})
	}
	var d fleet.Deployment
	var ts []fleet.Target
	testenv.EventuallyWithin(t, "the rollout finished after the fault", 3*time.Minute, func() bool {
		d, ts, _ = api.Deployment(ctx, "all")
		return d.State == fleet.DeploymentSucceeded
	})
	took := time.Since(began)
	for name, c := range replicas {
		if n := c.handover.Load(); n > 0 {
			t.Errorf("%s lost the lease %d times while it ran: the lease lapsed under a live holder", name, n)
		}
	}
	if c := countStates(ts); c[fleet.TargetSucceeded] != n {
		t.Fatalf("targets by state %v, want all %d succeeded", c, n)
	}
	if perSecond := perMinute / 60; perSecond > 0 {
		sent := make([]time.Time, 0, n)
		for _, tg := range ts {
			sent = append(sent, tg.Sent)
		}
		slices.SortFunc(sent, func(a, b time.Time) int { return a.Compare(b) })
		for i := perSecond; i < len(sent); i++ {
			if sent[i].Sub(sent[i-perSecond]) < time.Second {
				t.Fatalf("%d instances sent within %v: MaxPerMinute %d allows %d a second", perSecond+1, sent[i].Sub(sent[i-perSecond]), perMinute, perSecond)
			}
		}
	}
	ins, _ := api.Instances(ctx)
	for _, in := range ins {
		if !in.Current || in.Status == nil || in.Status.Outcome != app.OutcomeSucceeded {
			t.Fatalf("instance %s: its report is missing or old: %+v", in.ID, in.Report)
		}
	}
	return took
}

// TestScaleSmall: the whole scale path (simulated gateways on real
// connections to Mosquitto, ingestion, waves, the embedded store) with
// 300 gateways; BenchmarkScale is the same at 10,000.
func TestScaleSmall(t *testing.T) {
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "fleet.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(context.Background())
	r := runScale(t, 300, st)
	t.Logf("300 gateways: rollout %v, fleet CPU %v, peak RSS %d MiB; the broker's baseline %v", r.rollout, r.cpu, r.peakRSSKB/1024, r.baseline)
}

// BenchmarkScale: a rollout to 10,000 simulated gateways (a child process
// of lightweight MQTT clients, each its own connection to Mosquitto), in
// two waves, on the embedded store and on PostgreSQL. Reports the rollout
// time (target ≤ 60 s), documents published and reports ingested per
// second, the fleet process's CPU and peak RSS (target ≤ 500 MB), and the
// broker's own publish rate in the same run (one client, n retained QoS 1
// documents) as the baseline.
func BenchmarkScale(b *testing.B) {
	n := 10_000
	if s := os.Getenv("EDGEKIT_FLEET_SCALE_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	report := func(b *testing.B, r scaleResult) {
		b.ReportMetric(r.rollout.Seconds(), "rollout-s")
		b.ReportMetric(float64(n)/r.rollout.Seconds(), "documents/s")
		b.ReportMetric(float64(2*n)/r.rollout.Seconds(), "reports/s") // in progress, then succeeded
		b.ReportMetric(float64(n)/r.baseline.Seconds(), "broker-publishes/s")
		b.ReportMetric(r.cpu.Seconds(), "fleet-cpu-s")
		b.ReportMetric(float64(r.peakRSSKB)/1024, "peak-rss-MiB")
	}
	b.Run("bolt", func(b *testing.B) {
		st, err := boltstore.Open(filepath.Join(b.TempDir(), "fleet.db"), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close(context.Background())
		report(b, runScale(b, n, st))
	})
	b.Run("postgres", func(b *testing.B) {
		pg := pgtest.Start(b)
		st, err := pgstore.Open(context.Background(), pg.DSN, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close(context.Background())
		report(b, runScale(b, n, st))
	})
	// Two replicas on PostgreSQL share the simulation; the lease holder is
	// SIGKILLed once a fifth of the gateways have succeeded. failover
	// fails the benchmark if a status is lost or the rollout stalls.
	b.Run("replicas-kill", func(b *testing.B) {
		took := failover(b, "replicas", n, 0)
		b.ReportMetric(took.Seconds(), "rollout-s")
	})
}
