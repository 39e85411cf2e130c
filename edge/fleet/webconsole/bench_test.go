package webconsole_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/fleet"
	"github.com/edgekit/edgekit/edge/fleet/fleettest"
	"github.com/edgekit/edgekit/edge/fleet/store"
	"github.com/edgekit/edgekit/edge/fleet/webconsole"
	"github.com/edgekit/edgekit/internal/testenv"
)

// simulatedFleet is a fleet of n simulated gateways on the in-process
// bus (three sites, labels site and rack), every one online and running
// a deployment that reached them all.
func simulatedFleet(b *testing.B, n int) (*fleet.Fleet, *webconsole.Console) {
	b.Helper()
	ctx := context.Background()
	f, bus, _ := fleettest.New(b, &fleet.Options{Tick: 100 * time.Millisecond})
	fleettest.Run(b, f)
	if _, err := f.CreateApp(ctx, fleet.App{Name: "alarm", Kind: app.KindFunction}); err != nil {
		b.Fatal(err)
	}
	if _, err := f.AddVersion(ctx, "alarm", app.Version{Version: "1", Function: &app.FunctionVersion{
		Package: app.Artifact{URL: "https://packages.example.com/a.tgz", SHA256: strings.Repeat("ab", 32)}}}); err != nil {
		b.Fatal(err)
	}
	for i := range n {
		id := fmt.Sprintf("gw-%05d", i)
		if _, err := f.RegisterInstance(ctx, id, map[string]string{"site": fmt.Sprintf("plant-%d", i%3), "rack": fmt.Sprint(i % 40)}); err != nil {
			b.Fatal(err)
		}
		g, err := fleettest.Start(ctx, id, bus, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = g.Stop(ctx) })
	}
	if _, err := f.Deploy(ctx, fleet.Deployment{ID: "all", Apps: []fleet.AppVersion{{App: "alarm", Version: "1"}}}); err != nil {
		b.Fatal(err)
	}
	testenv.EventuallyWithin(b, "the deployment reaches every simulated gateway", 10*time.Minute, func() bool {
		d, _, err := f.Deployment(ctx, "all")
		return err == nil && d.State == fleet.DeploymentSucceeded
	})
	testenv.EventuallyWithin(b, "every gateway current", 5*time.Minute, func() bool {
		p, err := f.QueryInstances(ctx, fleet.InstanceQuery{Rollout: "current", Limit: 1})
		return err == nil && p.Matched == n
	})
	c, err := webconsole.New(ctx, f, &webconsole.Options{Token: token})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close(ctx) })
	return f, c
}

// BenchmarkGatewaysPage: the server's time to answer a page of the
// gateways list of a fleet of 10,000 simulated gateways (the target:
// 300 ms): the first page, a page far in, and a page filtered by label,
// presence and rollout.
func BenchmarkGatewaysPage(b *testing.B) {
	_, c := simulatedFleet(b, 10_000)
	srv := httptest.NewServer(c)
	b.Cleanup(srv.Close)
	cookies := signedIn(b, srv)
	for _, q := range []struct{ name, query string }{
		{"first", ""},
		{"after-9000", "after=gw-09000"},
		{"filtered", "selector=" + url.QueryEscape("site=plant-1,rack!=7") + "&presence=online&rollout=current&after=gw-05000"},
	} {
		b.Run(q.name, func(b *testing.B) {
			req := httptest.NewRequest("GET", "/ui/gateways?"+q.query, nil)
			for _, ck := range cookies {
				req.AddCookie(ck)
			}
			for b.Loop() {
				w := httptest.NewRecorder()
				c.ServeHTTP(w, req)
				if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "gateways match") {
					b.Fatalf("%s: %d", q.name, w.Code)
				}
			}
		})
	}
}

// signedIn signs in with the token and returns the session's cookies.
func signedIn(tb testing.TB, srv *httptest.Server) []*http.Cookie {
	tb.Helper()
	s := &site{t: tb, url: srv.URL, srv: srv}
	br := s.browser().operator()
	u, _ := url.Parse(srv.URL + "/ui/")
	return br.jar.Cookies(u)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLiveStreams: what one rollout's event stream to 20 browsers
// costs the fleet (the target: 5% of a core). A writer moves the 10,000
// targets of one deployment through sent, applying and succeeded in the
// store, as the lease holder does (batches of 100, 3,000 target writes a
// second: a 10,000-gateway rollout in 10 s, and the deployment's record
// each second), once with no stream open and once with 20 reading it
// over HTTP; the difference in the process's CPU time over the run's wall
// time is the streams' cost (it includes the 20 clients' reading, so it
// is an upper bound). Rounds alternate; the medians are reported.
func BenchmarkLiveStreams(b *testing.B) {
	ctx := context.Background()
	f, _, st := fleettest.New(b, nil) // not Run: the writer plays the lease holder
	c, err := webconsole.New(ctx, f, &webconsole.Options{Token: token})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close(ctx) })
	srv := httptest.NewServer(c)
	b.Cleanup(srv.Close)
	cookies := signedIn(b, srv)
	const n, batch, perSecond = 10_000, 100, 3_000
	var alone, streamed []float64
	for round := range 3 {
		for _, streams := range []int{0, 20} {
			id := fmt.Sprintf("d-%d-%d", round, streams)
			d := fleet.Deployment{ID: id, State: fleet.DeploymentRunning, Waves: []int{n / 10, n - n/10}, Created: time.Now(), Updated: time.Now()}
			put(b, st, "deployments", id, d)
			var wg sync.WaitGroup
			var received atomic.Int64
			sctx, cancel := context.WithCancel(ctx)
			for range streams {
				req, _ := http.NewRequestWithContext(sctx, "GET", srv.URL+"/ui/deployments/"+id+"/events", nil)
				for _, ck := range cookies {
					req.AddCookie(ck)
				}
				resp, err := srv.Client().Do(req)
				if err != nil || resp.StatusCode != http.StatusOK {
					b.Fatalf("a stream: %v %v", resp, err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer resp.Body.Close()
					n, _ := io.Copy(io.Discard, resp.Body)
					received.Add(n)
				}()
			}
			cpu0, wall0 := cpuTime(), time.Now()
			tick := time.NewTicker(time.Second * batch / perSecond)
			written := 0
			for _, state := range []fleet.TargetState{fleet.TargetSent, fleet.TargetApplying, fleet.TargetSucceeded} {
				for i := 0; i < n; i += batch {
					<-tick.C
					var ops []store.Op
					for j := i; j < i+batch; j++ {
						t := fleet.Target{Deployment: id, Instance: fmt.Sprintf("gw-%05d", j), Wave: min(j/(n/10), 1), State: state, Revision: 1, Updated: time.Now()}
						ops = append(ops, store.Put("targets", id+"/"+t.Instance, encodeJSON(b, t)))
					}
					if written += batch; written%perSecond == 0 {
						d.Updated = time.Now()
						if written >= 2*n {
							d.Wave = 1
						}
						ops = append(ops, store.Put("deployments", id, encodeJSON(b, d)))
					}
					if _, err := st.Apply(ctx, ops...); err != nil {
						b.Fatal(err)
					}
				}
			}
			tick.Stop()
			share := 100 * float64(cpuTime()-cpu0) / float64(time.Since(wall0))
			cancel()
			wg.Wait()
			// Each stream had an event (over 1 KB) at least every half
			// second of the 10 s run, bar a few.
			if min := int64(streams) * 15 << 10; received.Load() < min {
				b.Fatalf("the %d streams received %d bytes in all, want %d at least", streams, received.Load(), min)
			}
			if streams == 0 {
				alone = append(alone, share)
			} else {
				streamed = append(streamed, share)
			}
		}
	}
	slices.Sort(alone)
	slices.Sort(streamed)
	for b.Loop() { // the rounds above are the measurement; the loop only satisfies the runner
	}
	b.ReportMetric(alone[1], "%core-writer")
	b.ReportMetric(streamed[1], "%core-with-20-streams")
	b.ReportMetric(streamed[1]-alone[1], "%core-streams")
}

func put(tb testing.TB, st store.Store, coll, key string, v any) {
	tb.Helper()
	if _, err := st.Apply(context.Background(), store.Put(coll, key, encodeJSON(tb, v))); err != nil {
		tb.Fatal(err)
	}
}

func encodeJSON(tb testing.TB, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
