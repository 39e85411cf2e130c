package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/edgekit/edgekit/edge"
	"github.com/edgekit/edgekit/edge/broker"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/edge/fleet"
	"github.com/edgekit/edgekit/edge/fleet/fleettest"
	"github.com/edgekit/edgekit/function/codepkg"
	"github.com/edgekit/edgekit/internal/brokertest"
	"github.com/edgekit/edgekit/internal/gatewaytest"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/invoke"
)

// chromium starts a headless Debian Chromium for a test (stopped when
// it ends) and returns a tab's context. A missing browser fails the test
// in CI and skips it elsewhere.
func chromium(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		testenv.Missing(t, fmt.Errorf("chromium is not installed (Debian package chromium; make test installs it): %w", err))
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // tests run as root
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("starting chromium: %v", err)
	}
	// Every script error and every error the browser logs (a blocked
	// resource, a refused script) fails the test.
	messages := chromedp.Console(ctx)
	var problems []string
	read := make(chan struct{})
	go func() {
		defer close(read)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.IsException() || m.Type == "error" {
				problems = append(problems, fmt.Sprintf("%s at %s:%d: %s", m.Type, m.URL, m.Line, m.Text))
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		<-read
		for _, p := range problems {
			t.Errorf("the browser's console: %s", p)
		}
	})
	return ctx
}

// step runs browser actions with a bound, failing the test with what it
// was doing and the page's main content.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		page, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("main")))
		t.Fatalf("%s: %v\nthe page's main:\n%s", what, err, page)
	}
}

// value runs one browser action that gives a value.
func value[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	v, err := chromedp.Run(sctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// evalVoid evaluates a script for its effect.
func evalVoid(js string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Evaluate[any](js)(ctx, t)
		return chromedp.Void{}, err
	}
}

// TestWebConsole drives the fleet's web console in a real headless
// Chromium, against console serve on a real Mosquitto with three real
// gateways (two at site=plant-1): sign in with the token; create a
// function app; upload two versions as packages (signed, as the gateways
// require), the second crashing at start; deploy v1 by label in two waves
// with a bake time and watch it finish without reloading the page,
// pausing and resuming it on the way; deploy v2 and watch its first wave
// fail and the page show why; a viewer signed in with a password sees no
// deploy form and is refused when posting one anyway. Along the way the
// pages are photographed at 1280 and 390 px and checked to show their
// landmarks, every control has a label, the skip link is the first stop
// of the keyboard, and times show in the browser's time zone.
func TestWebConsole(t *testing.T) {
	ctx := chromium(t)
	upstream := brokertest.Start(t, nil)
	con := startConsole(t, upstream.URL().String(), "bolt:"+filepath.Join(t.TempDir(), "fleet.db"))
	dir := t.TempDir()
	key, pub := con.keygen(dir)
	bootstrap := versionFn(t, dir)
	packages, signatures := map[string]string{}, map[string]string{}
	const greeting = `<script>alert(1)</script> hello from <img src=x onerror=alert(2)>`
	for v, env := range map[string]map[string]string{"1": {"GREETING": greeting}, "2": {"CRASH": "1"}} {
		fn := functionDir(t, filepath.Join(dir, "hello-go-"+v), bootstrap, env)
		packages[v] = filepath.Join(dir, "hello-go-"+v+".tar.gz")
		con.must(nil, "pack", fn, "hello-go", v, "-o", packages[v])
		signatures[v] = strings.TrimSpace(con.must(nil, "sign", packages[v], "-sign", key))
	}
	if _, err := con.runIn("a long viewer password\n", "user", "set", "vera", "-role", "viewer"); err != nil {
		t.Fatal(err)
	}
	gws := map[string]*edge.Gateway{}
	for i, site := range []string{"plant-1", "plant-1", "plant-2"} {
		id := fmt.Sprintf("gw-%d", i+1)
		con.must(nil, "instance", "label", id, "site="+site)
		gws[id], _ = gatewaytest.Run(t, &edge.Options{DataDir: filepath.Join(dir, id), Instance: id, DeploymentFile: "-", API: &edge.APIOptions{Address: "-"},
			Upstream: &mqttbus.Options{Brokers: []string{upstream.URL().String()}}, StatusInterval: time.Second,
			Packages: &codepkg.Options{PublicKey: pub}})
	}

	// Sign in with the token; the gateways page lists the three online.
	if _, err := chromedp.Call(ctx, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "Asia/Tokyo"}); err != nil {
		t.Fatalf("setting the browser's time zone: %v", err)
	}
	con.signIn(t, ctx)
	testenv.EventuallyWithin(t, "the gateways page shows gw-1, gw-2 and gw-3 online", time.Minute, func() bool {
		step(t, ctx, "reading the gateways page", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`#matched`)))
		return value(t, ctx, "counting the gateways online", chromedp.Evaluate[int](`document.querySelectorAll("table.gateways .pill.online").length`)) == 3
	})
	shown := value(t, ctx, "reading a last-seen time", chromedp.Text(chromedp.CSS(`table.gateways time`)))
	if !strings.Contains(shown, "GMT+9") {
		t.Errorf("a time shows as %q: want the browser's time zone (Asia/Tokyo, GMT+9)", shown)
	}
	checkPage(t, ctx, "gateways")
	step(t, ctx, "pressing Tab", chromedp.KeyEvent("\t"))
	first := value(t, ctx, "the keyboard's first stop", chromedp.Evaluate[string](`document.activeElement.className`))
	if first != "skip" {
		t.Errorf("the first Tab stops at %q, want the skip link", first)
	}

	// Create the app and upload its two versions.
	step(t, ctx, "creating the app",
		chromedp.Navigate(con.url+"/ui/apps"),
		chromedp.SendKeys(chromedp.CSS(`#app-name`), "hello-go"),
		chromedp.SetValue(chromedp.CSS(`#app-kind`), "function"),
		chromedp.SendKeys(chromedp.CSS(`#app-description`), "greets <b>everyone</b>"),
		chromedp.Submit(chromedp.CSS(`#app-name`)),
		chromedp.WaitVisible(chromedp.CSS(`#add-version`)),
	)
	for _, v := range []string{"1", "2"} {
		step(t, ctx, "uploading version "+v,
			chromedp.SendKeys(chromedp.CSS(`#version`), v),
			chromedp.SendKeys(chromedp.CSS(`#signature`), signatures[v]),
			chromedp.SendKeys(chromedp.CSS(`#probation`), "1s"),
			chromedp.SendKeys(chromedp.CSS(`#config`), fmt.Sprintf(`{"greeting": "hello %s"}`, v)),
			chromedp.SetUploadFiles(chromedp.CSS(`#package`), []string{packages[v]}),
			chromedp.Click(chromedp.CSS(`form[data-xhr] button[type=submit]`)),
			chromedp.WaitVisible(`//p[contains(@class,"ok") and contains(., "Version `+v+` of hello-go added")]`),
		)
	}
	diff := value(t, ctx, "reading the configuration diff", chromedp.Text(chromedp.CSS(`pre.diff`)))
	if !regexp.MustCompile(`-\s+"greeting": "hello 1"\n\+\s+"greeting": "hello 2"`).MatchString(diff) {
		t.Errorf("the diff between versions 1 and 2:\n%s", diff)
	}
	checkPage(t, ctx, "app")

	// v1 by label in two waves, with a bake time to pause in: the page
	// follows it to its end without a reload.
	deploy := func(id, apps, priority, bake string) {
		t.Helper()
		step(t, ctx, "deploying "+id,
			chromedp.Navigate(con.url+"/ui/deployments"),
			chromedp.SendKeys(chromedp.CSS(`#dep-id`), id),
			chromedp.SendKeys(chromedp.CSS(`#dep-apps`), apps),
			chromedp.SendKeys(chromedp.CSS(`#dep-selector`), "site=plant-1"),
			chromedp.SetValue(chromedp.CSS(`#dep-priority`), priority),
			chromedp.SendKeys(chromedp.CSS(`#dep-waves`), "1,100%"),
			chromedp.SendKeys(chromedp.CSS(`#dep-bake`), bake),
			chromedp.Submit(chromedp.CSS(`#dep-id`)),
			chromedp.WaitVisible(chromedp.CSS(`#live [data-state]`)),
			evalVoid(`window.edgekitNoReload = true`),
		)
	}
	deploy("plant-1-v1", "hello-go=1", "0", "3s")
	step(t, ctx, "pausing plant-1-v1",
		chromedp.SendKeys(chromedp.CSS(`#pause-reason`), "checking the first gateway"),
		chromedp.Click(chromedp.CSS(`form[action$="/pause"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`#live [data-state="paused"]`)),
		chromedp.WaitVisible(`//p[contains(@class,"reason") and contains(., "checking the first gateway")]`),
		chromedp.WaitVisible(chromedp.CSS(`form[action$="/resume"] button`)),
	)
	checkPage(t, ctx, "deployment-paused")
	step(t, ctx, "resuming plant-1-v1 and watching it succeed",
		chromedp.Click(chromedp.CSS(`form[action$="/resume"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`#live [data-state="succeeded"]`)),
	)
	kept := value(t, ctx, "asking the page whether it was reloaded", chromedp.Evaluate[bool](`window.edgekitNoReload === true`))
	counts := value(t, ctx, "reading the finished rollout", chromedp.Text(chromedp.CSS(`#live .counts`)))
	if !kept {
		t.Error("the page was reloaded while the rollout ran")
	}
	if !strings.Contains(counts, "2 succeeded") || !strings.Contains(counts, "0 failed") {
		t.Errorf("the finished rollout's counts: %q", counts)
	}
	checkPage(t, ctx, "deployment")

	// gw-1's logs, fetched from it on demand: its function's line shows as
	// the text it is.
	if _, err := gws["gw-1"].Functions().Invoke(context.Background(), "hello-go", invoke.Request{Payload: []byte(`{}`)}); err != nil {
		t.Fatalf("invoking hello-go on gw-1: %v", err)
	}
	step(t, ctx, "fetching gw-1's logs",
		chromedp.Navigate(con.url+"/ui/gateways/gw-1"),
		chromedp.SetValue(chromedp.CSS(`#logs-app`), "hello-go"),
		chromedp.Click(chromedp.CSS(`form[data-busy] button`)),
		chromedp.WaitVisible(chromedp.CSS(`pre.logs`)),
	)
	if logs := value(t, ctx, "reading the logs", chromedp.Text(chromedp.CSS(`pre.logs`))); !strings.Contains(logs, greeting) {
		t.Errorf("gw-1's logs do not show the function's line as text:\n%s", logs)
	}
	if n := value(t, ctx, "looking for markup in the logs", chromedp.Evaluate[int](`document.querySelectorAll("main script, main img").length`)); n != 0 {
		t.Errorf("the logs made %d elements of the page", n)
	}
	checkPage(t, ctx, "gateway")

	// v2 crashes at start: its first wave stops it, and the page says why.
	deploy("plant-1-v2", "hello-go=2", "1", "")
	step(t, ctx, "watching plant-1-v2 stop", chromedp.WaitVisible(chromedp.CSS(`#live [data-state="aborted"]`)))
	reason := value(t, ctx, "reading why it stopped", chromedp.Text(chromedp.CSS(`#live p.reason`)))
	failed := value(t, ctx, "reading its failures", chromedp.Text(chromedp.CSS(`#live .counts .failed`)))
	if !strings.Contains(reason, "wave 1: 1 of 1 instances failed") || failed != "1 failed" {
		t.Errorf("the stopped rollout shows %q, %q", reason, failed)
	}

	// A viewer, in a browser context of their own.
	vctx, cancel := chromedp.NewContext(ctx, chromedp.WithNewBrowserContext())
	defer cancel()
	if err := chromedp.Do(vctx); err != nil { // its tab lives as long as vctx
		t.Fatal(err)
	}
	step(t, vctx, "vera signs in",
		chromedp.Navigate(con.url+"/ui/signin"),
		chromedp.SendKeys(chromedp.CSS(`#user`), "vera"),
		chromedp.SendKeys(chromedp.CSS(`#password`), "a long viewer password"),
		chromedp.Submit(chromedp.CSS(`#user`)),
		chromedp.WaitVisible(chromedp.CSS(`#matched`)),
		chromedp.Navigate(con.url+"/ui/deployments"),
		chromedp.WaitVisible(chromedp.CSS(`main h1`)),
	)
	forms := value(t, vctx, "counting the deploy forms", chromedp.Evaluate[int](`document.querySelectorAll('form[action="/ui/deployments"]').length`))
	status := value(t, vctx, "posting a deploy form anyway", chromedp.Evaluate[int](`(async () => {
		const csrf = document.querySelector('input[name=csrf]').value;
		const body = new URLSearchParams({csrf, id: "by-vera", apps: "hello-go=1", selector: "site=plant-1"});
		return (await fetch("/ui/deployments", {method: "POST", body})).status;
	})()`, chromedp.EvalAwaitPromise))
	if forms != 0 || status != 403 {
		t.Errorf("the viewer sees %d deploy or action forms and a posted deploy answers %d, want none and 403", forms, status)
	}
	if _, err := con.run("rollout", "status", "by-vera"); err == nil {
		t.Error("the viewer's deployment exists")
	}
	step(t, ctx, "opening the audit log", chromedp.Navigate(con.url+"/ui/audit"))
	audit := value(t, ctx, "reading the audit log", chromedp.Text(chromedp.CSS(`main table`)))
	for _, want := range []string{"vera (viewer)", "refused", "deploy", "pause", "resume", "add-version", "create-app", "sign-in"} {
		if !strings.Contains(audit, want) {
			t.Errorf("the audit log lacks %q", want)
		}
	}
	checkPage(t, ctx, "audit")
	if t.Failed() {
		return
	}
	var in fleet.InstanceView
	for _, v := range con.instances() {
		if v.ID == "gw-3" {
			in = v
		}
	}
	if in.Running != "" {
		t.Errorf("gw-3 (plant-2) runs %q", in.Running)
	}
}

// TestWebConsoleAtScale: the web console of a fleet of 10,000 simulated
// gateways on a real Mosquitto (a child process, one MQTT connection
// each): the gateways page counts them all online and pages through
// them, and a deployment to all of them in two waves, made in the browser,
// is followed to its end on its page without a reload.
func TestWebConsoleAtScale(t *testing.T) {
	const n = 10_000
	ctx := chromium(t)
	upstream := brokertest.Start(t, &broker.Options{MaxConnections: -1, MaxQueuedMessages: 100_000})
	con := startConsole(t, upstream.URL().String(), "bolt:"+filepath.Join(t.TempDir(), "fleet.db"))
	con.must(nil, "app", "create", "web", "-kind", "container")
	con.must(nil, "version", "add", "web", "1", "-image", "localhost/web:1")
	fleettest.StartSimulation(t, upstream.URL().Host, n)
	con.signIn(t, ctx)
	testenv.EventuallyWithin(t, "the gateways page counts 10,000 online", 2*time.Minute, func() bool {
		step(t, ctx, "opening the gateways online", chromedp.Navigate(con.url+"/ui/gateways?presence=online"), chromedp.WaitVisible(chromedp.CSS(`#matched`)))
		return strings.HasPrefix(value(t, ctx, "reading the count", chromedp.Text(chromedp.CSS(`#matched`))), "10000 gateways match")
	})
	t.Logf("the gateways page of %d: %.0f ms from request to response", n, value(t, ctx, "reading the page's timing",
		chromedp.Evaluate[float64](`(e => e.responseStart - e.requestStart)(performance.getEntriesByType("navigation")[0])`)))
	step(t, ctx, "the next page", chromedp.Click(chromedp.CSS(`a[rel=next]`)), chromedp.WaitVisible(chromedp.CSS(`#matched`)))
	if first := value(t, ctx, "reading the next page", chromedp.Text(chromedp.CSS(`table.gateways tbody td a`))); first != "sim-00050" {
		t.Errorf("the second page starts at %q, want sim-00050", first)
	}
	checkPage(t, ctx, "gateways-10000")

	step(t, ctx, "deploying to all",
		chromedp.Navigate(con.url+"/ui/deployments"),
		chromedp.SendKeys(chromedp.CSS(`#dep-id`), "all-10k"),
		chromedp.SendKeys(chromedp.CSS(`#dep-apps`), "web=1"),
		chromedp.SendKeys(chromedp.CSS(`#dep-waves`), "10%,100%"),
		chromedp.Submit(chromedp.CSS(`#dep-id`)),
		chromedp.WaitVisible(chromedp.CSS(`#live [data-state]`)),
		evalVoid(`window.edgekitNoReload = true`),
		chromedp.WaitVisible(chromedp.CSS(`#live [data-state="succeeded"]`)),
	)
	if !value(t, ctx, "asking the page whether it was reloaded", chromedp.Evaluate[bool](`window.edgekitNoReload === true`)) {
		t.Error("the page was reloaded while the rollout ran")
	}
	if counts := value(t, ctx, "reading the counts", chromedp.Text(chromedp.CSS(`#live .counts`))); !strings.Contains(counts, "10000 succeeded") {
		t.Errorf("the finished rollout's counts: %q", counts)
	}
	if waves := value(t, ctx, "reading the waves", chromedp.Text(chromedp.CSS(`#live table.waves tbody`))); !regexp.MustCompile(`1\s+1000\s+1000\s+0\s+0\s+passed\s+2\s+9000\s+9000`).MatchString(waves) {
		t.Errorf("the waves: %q", waves)
	}
	checkPage(t, ctx, "deployment-10000")
}

// signIn signs the browser in with the fleet's token.
func (c *fleetConsole) signIn(t *testing.T, ctx context.Context) {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(c.data, "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	step(t, ctx, "signing in with the token",
		chromedp.Navigate(c.url+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS(`#token`)),
		chromedp.SendKeys(chromedp.CSS(`#token`), strings.TrimSpace(string(tok))),
		chromedp.Submit(chromedp.CSS(`#token`)),
		chromedp.WaitVisible(chromedp.CSS(`#matched`)),
	)
}

// checkPage photographs the page at 1280 and 390 px (PNG files in the
// test's artifact directory) and checks that at both widths the header,
// the main navigation, the main content and its heading are on screen
// and the page needs no sideways scrolling, and that every control has a
// label.
func checkPage(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	for _, width := range []int64{1280, 390} {
		step(t, ctx, fmt.Sprintf("setting the width to %d px", width), chromedp.EmulateViewport(width, 900))
		problems := value(t, ctx, fmt.Sprintf("checking %s at %d px", name, width), chromedp.Evaluate[[]string](`(() => {
			const w = document.documentElement.clientWidth, out = [];
			for (const sel of ["header.top", "nav[aria-label=Main]", "main", "main h1"]) {
				const e = document.querySelector(sel);
				if (!e) { out.push(sel + " is missing"); continue; }
				const b = e.getBoundingClientRect();
				if (b.width <= 0 || b.height <= 0 || b.left < 0 || b.right > w + 1) out.push(sel + " is off screen: " + b.left + " to " + b.right + " of " + w);
			}
			if (document.documentElement.scrollWidth > w + 1) out.push("the page is " + document.documentElement.scrollWidth + " px wide in " + w);
			for (const e of document.querySelectorAll("input:not([type=hidden]), select, textarea, button")) {
				const named = (e.labels && e.labels.length) || e.getAttribute("aria-label") || (e.tagName === "BUTTON" && e.textContent.trim());
				if (!named) out.push("a control without a label: " + e.outerHTML.slice(0, 120));
			}
			return out;
		})()`))
		for _, p := range problems {
			t.Errorf("%s at %d px: %s", name, width, p)
		}
		shot := value(t, ctx, fmt.Sprintf("photographing %s at %d px", name, width), chromedp.FullScreenshot(100))
		if !bytes.HasPrefix(shot, []byte("\x89PNG")) {
			t.Errorf("%s at %d px: the screenshot is not a PNG", name, width)
			continue
		}
		file := filepath.Join(t.ArtifactDir(), fmt.Sprintf("%s-%d.png", name, width))
		if err := os.WriteFile(file, shot, 0o644); err != nil {
			t.Error(err)
		}
	}
	step(t, ctx, "restoring the width", chromedp.EmulateViewport(1280, 900))
}
