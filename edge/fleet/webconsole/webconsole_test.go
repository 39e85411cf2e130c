package webconsole_test

import (
	"bufio"
	"context"
	"errors"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/fleet"
	"github.com/edgekit/edgekit/edge/fleet/fleettest"
	"github.com/edgekit/edgekit/edge/fleet/webconsole"
	"github.com/edgekit/edgekit/internal/testenv"
)

const token = "the-fleet-operators-token"

// site is a fleet with its console behind a test server.
type site struct {
	t   testing.TB
	url string
	f   *fleet.Fleet
	bus bus.Bus
	srv *httptest.Server
}

func newSite(t testing.TB, opts *webconsole.Options, tls bool) *site {
	t.Helper()
	f, b, _ := fleettest.New(t, nil)
	fleettest.Run(t, f)
	o := webconsole.Options{Token: token, Poll: 20 * time.Millisecond}
	if opts != nil {
		o = *opts
		o.Token = token
	}
	c, err := webconsole.New(context.Background(), f, &o)
	if err != nil {
		t.Fatal(err)
	}
	var srv *httptest.Server
	if tls {
		srv = httptest.NewTLSServer(c)
	} else {
		srv = httptest.NewServer(c)
	}
	t.Cleanup(func() {
		_ = c.Close(context.Background())
		srv.Close()
	})
	return &site{t: t, url: srv.URL, f: f, bus: b, srv: srv}
}

// browser is a client with its own cookies that does not follow
// redirects.
type browser struct {
	s   *site
	c   *http.Client
	jar *cookiejar.Jar
}

func (s *site) browser() *browser {
	jar, _ := cookiejar.New(nil)
	c := *s.srv.Client() // a copy: each browser its own cookies
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &browser{s: s, c: &c, jar: jar}
}

func (b *browser) get(path string) (*http.Response, string) {
	b.s.t.Helper()
	resp, err := b.c.Get(b.s.url + path)
	if err != nil {
		b.s.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

func (b *browser) post(path string, form url.Values) (*http.Response, string) {
	b.s.t.Helper()
	resp, err := b.c.PostForm(b.s.url+path, form)
	if err != nil {
		b.s.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the CSRF token of the page at path.
func (b *browser) csrf(path string) string {
	b.s.t.Helper()
	_, body := b.get(path)
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		b.s.t.Fatalf("%s has no CSRF token:\n%s", path, body)
	}
	return html.UnescapeString(m[1])
}

// signIn signs in with form (a token, or a user and password).
func (b *browser) signIn(form url.Values) *http.Response {
	b.s.t.Helper()
	form.Set("csrf", b.csrf("/ui/signin"))
	resp, _ := b.post("/ui/signin", form)
	return resp
}

func (b *browser) operator() *browser {
	b.s.t.Helper()
	if resp := b.signIn(url.Values{"token": {token}}); resp.StatusCode != http.StatusSeeOther {
		b.s.t.Fatalf("sign-in with the token: %s", resp.Status)
	}
	return b
}

func (b *browser) cookie(name string) *http.Cookie {
	u, _ := url.Parse(b.s.url + "/ui/")
	for _, c := range b.jar.Cookies(u) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// TestNoSession: without a session every page goes to the sign-in page
// with nothing of the fleet in it, and the event stream and every form
// are refused.
func TestNoSession(t *testing.T) {
	s := newSite(t, nil, false)
	if _, err := s.f.CreateApp(context.Background(), fleet.App{Name: "secret-app", Kind: app.KindFunction}); err != nil {
		t.Fatal(err)
	}
	b := s.browser()
	for _, path := range []string{"/ui/", "/ui/gateways", "/ui/apps", "/ui/apps/secret-app", "/ui/deployments", "/ui/deployments/d1", "/ui/audit", "/ui/gateways/gw-1"} {
		resp, body := b.get(path)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/signin" || strings.Contains(body, "secret-app") {
			t.Errorf("GET %s without a session: %s, Location %q", path, resp.Status, resp.Header.Get("Location"))
		}
	}
	if resp, _ := b.get("/ui/deployments/d1/events"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the event stream without a session: %s, want 401", resp.Status)
	}
	if resp, _ := b.post("/ui/apps", url.Values{"name": {"x"}, "kind": {"function"}}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a form without a session: %s, want 401", resp.Status)
	}
	// A forged cookie is no session.
	u, _ := url.Parse(s.url + "/ui/")
	b.jar.SetCookies(u, []*http.Cookie{{Name: "edgekit_session", Value: "eyJ1IjoiYWRtaW4iLCJ0Ijp0cnVlLCJlIjo5OTk5OTk5OTk5fQ.AAAA", Path: "/ui/"}})
	if resp, _ := b.get("/ui/apps"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("a forged session cookie: %s", resp.Status)
	}
	if resp, body := b.get("/ui/assets/console.css"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "body") {
		t.Errorf("the style sheet: %s", resp.Status)
	}
}

// TestSignIn: the token and a user's password sign in; a wrong one does
// not; the session cookie is HttpOnly, SameSite=Strict, Secure on TLS
// (and when told so behind a proxy); a sign-in form without its CSRF
// token is refused; signing out ends the session. Each attempt is in the
// audit log.
func TestSignIn(t *testing.T) {
	for _, c := range []struct {
		name       string
		tls        bool
		secure     bool
		wantSecure bool
	}{{"http", false, false, false}, {"tls", true, false, true}, {"behind a TLS proxy", false, true, true}} {
		t.Run(c.name, func(t *testing.T) {
			s := newSite(t, &webconsole.Options{Secure: c.secure}, c.tls)
			b := s.browser().operator()
			ck := b.cookie("edgekit_session")
			if ck == nil {
				t.Fatal("no session cookie after signing in")
			}
			// The jar keeps no flags: read them off a fresh sign-in's
			// Set-Cookie.
			nb := s.browser()
			form := url.Values{"token": {token}, "csrf": {nb.csrf("/ui/signin")}}
			resp, _ := nb.post("/ui/signin", form)
			var set *http.Cookie
			for _, sc := range resp.Cookies() {
				if sc.Name == "edgekit_session" {
					set = sc
				}
			}
			if set == nil || !set.HttpOnly || set.SameSite != http.SameSiteStrictMode || set.Secure != c.wantSecure || set.Path != "/ui/" {
				t.Errorf("the session cookie %+v: want HttpOnly, SameSite=Strict, Secure=%v, Path /ui/", set, c.wantSecure)
			}
			if resp, _ := b.get("/ui/gateways"); resp.StatusCode != http.StatusOK {
				t.Errorf("the gateways page, signed in: %s", resp.Status)
			}
		})
	}

	s := newSite(t, nil, false)
	ctx := context.Background()
	if _, err := s.f.SetUser(ctx, "vera", "a long viewer password", fleet.RoleViewer); err != nil {
		t.Fatal(err)
	}
	b := s.browser()
	if resp := b.signIn(url.Values{"user": {"vera"}, "password": {"not her password"}}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a wrong password: %s", resp.Status)
	}
	if resp := b.signIn(url.Values{"token": {"not-the-fleet-token-at-all"}}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a wrong token: %s", resp.Status)
	}
	if resp, _ := b.post("/ui/signin", url.Values{"token": {token}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a sign-in without its CSRF token: %s, want 403", resp.Status)
	}
	if resp := b.signIn(url.Values{"user": {"vera"}, "password": {"a long viewer password"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("vera's sign-in: %s", resp.Status)
	}
	if _, body := b.get("/ui/gateways"); !strings.Contains(body, "vera") || !strings.Contains(body, "(viewer)") {
		t.Errorf("the page does not show who is signed in")
	}
	resp, _ := b.post("/ui/signout", url.Values{"csrf": {b.csrf("/ui/gateways")}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("sign-out: %s", resp.Status)
	}
	if resp, _ := b.get("/ui/gateways"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after signing out: %s", resp.Status)
	}
	// Five wrong passwords lock the name out, the right one included.
	for range 5 {
		b.signIn(url.Values{"user": {"vera"}, "password": {"guess, guess, guess"}})
	}
	nb := s.browser()
	form := url.Values{"user": {"vera"}, "password": {"a long viewer password"}, "csrf": {nb.csrf("/ui/signin")}}
	if resp, body := nb.post("/ui/signin", form); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Too many wrong passwords") {
		t.Errorf("after five wrong passwords: %s", resp.Status)
	}
	es, err := s.f.AuditDay(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var log []string
	for _, e := range es {
		log = append(log, e.Actor+" "+e.Action+" "+map[bool]string{true: "refused", false: "done"}[e.Error != ""]+" "+e.Error)
	}
	for _, want := range []string{"vera sign-in refused", "token sign-in refused", "unknown sign-in refused", "vera sign-in done", "vera sign-out done", "locked for"} {
		if !strings.Contains(strings.Join(log, "\n"), want) {
			t.Errorf("the audit log lacks %q:\n%s", want, strings.Join(log, "\n"))
		}
	}
}

// TestCSRF: a form without its token, or with another session's, is
// refused and changes nothing.
func TestCSRF(t *testing.T) {
	s := newSite(t, nil, false)
	a, b := s.browser().operator(), s.browser().operator()
	other := b.csrf("/ui/apps")
	for name, form := range map[string]url.Values{
		"no token":              {"name": {"app-1"}, "kind": {"function"}},
		"another session's one": {"name": {"app-2"}, "kind": {"function"}, "csrf": {other}},
	} {
		if resp, _ := a.post("/ui/apps", form); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %s, want 403", name, resp.Status)
		}
	}
	if apps, _ := s.f.Apps(context.Background()); len(apps) != 0 {
		t.Errorf("refused forms created %+v", apps)
	}
	form := url.Values{"name": {"app-3"}, "kind": {"function"}, "csrf": {a.csrf("/ui/apps")}}
	if resp, _ := a.post("/ui/apps", form); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/apps/app-3" {
		t.Errorf("with its token: %s %s", resp.Status, resp.Header.Get("Location"))
	}
	if _, err := s.f.App(context.Background(), "app-3"); err != nil {
		t.Error(err)
	}
}

// TestViewer: a viewer sees the pages without their forms, and a form
// posted anyway is refused, changes nothing, and is in the audit log.
func TestViewer(t *testing.T) {
	s := newSite(t, nil, false)
	ctx := context.Background()
	if _, err := s.f.SetUser(ctx, "vera", "a long viewer password", fleet.RoleViewer); err != nil {
		t.Fatal(err)
	}
	if _, err := s.f.CreateApp(ctx, fleet.App{Name: "alarm", Kind: app.KindFunction}); err != nil {
		t.Fatal(err)
	}
	b := s.browser()
	b.signIn(url.Values{"user": {"vera"}, "password": {"a long viewer password"}})
	_, body := b.get("/ui/deployments")
	if strings.Contains(body, `action="/ui/deployments"`) {
		t.Error("a viewer is shown the deploy form")
	}
	csrf := b.csrf("/ui/deployments")
	resp, body := b.post("/ui/deployments", url.Values{"id": {"d1"}, "apps": {"alarm=1"}, "csrf": {csrf}})
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "viewer") {
		t.Errorf("a viewer's deploy: %s", resp.Status)
	}
	if ds, _ := s.f.Deployments(ctx); len(ds) != 0 {
		t.Errorf("a viewer deployed %+v", ds)
	}
	for _, path := range []string{"/ui/apps", "/ui/apps/alarm/versions", "/ui/gateways/gw-1/labels", "/ui/deployments/d1/pause", "/ui/deployments/d1/resume", "/ui/deployments/d1/cancel", "/ui/deployments/d1/rollback"} {
		if resp, _ := b.post(path, url.Values{"csrf": {csrf}, "name": {"x"}, "kind": {"function"}, "labels": {"a=b"}}); resp.StatusCode != http.StatusForbidden {
			t.Errorf("a viewer's POST %s: %s, want 403", path, resp.Status)
		}
	}
	es, _ := s.f.AuditDay(ctx, time.Now())
	if len(es) == 0 || es[0].Actor != "vera" || es[0].Action != "refused" || !strings.Contains(es[0].Error, "viewer") {
		t.Errorf("the last audit entry %+v, want vera refused", es[0])
	}
	// Promoted, the same session may deploy at its next request.
	if _, err := s.f.SetUser(ctx, "vera", "a long viewer password", fleet.RoleOperator); err != nil {
		t.Fatal(err)
	}
	if _, body := b.get("/ui/deployments"); !strings.Contains(body, `action="/ui/deployments"`) {
		t.Error("an operator is not shown the deploy form")
	}
}

var rawMarkup = regexp.MustCompile(`(?i)<script>alert|<img src=x onerror`)

// TestEscaping: what the fleet holds from operators and gateways — an
// app's description, a name a form refused, a gateway's failure reason,
// a log line — renders as text, never as markup.
func TestEscaping(t *testing.T) {
	s := newSite(t, nil, false)
	ctx := context.Background()
	evil := `<script>alert(1)</script><img src=x onerror=alert(2)>`
	if _, err := s.f.CreateApp(ctx, fleet.App{Name: "alarm", Kind: app.KindFunction, Description: evil}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.f.AddVersion(ctx, "alarm", app.Version{Version: "1", Function: &app.FunctionVersion{
		Package: app.Artifact{URL: "https://packages.example.com/a.tgz", SHA256: strings.Repeat("ab", 32)}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.f.RegisterInstance(ctx, "gw-1", map[string]string{"site": "a"}); err != nil {
		t.Fatal(err)
	}
	g, err := fleettest.Start(ctx, "gw-1", s.bus, func(string, *app.Deployment) error { return errors.New(evil) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Stop(ctx) })
	if err := g.SetLogs(ctx, map[string][]app.LogLine{"alarm": {{Level: "INFO", Text: evil}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.f.Deploy(ctx, fleet.Deployment{ID: "d1", Apps: []fleet.AppVersion{{App: "alarm", Version: "1"}}}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "d1 aborted by gw-1's failure", func() bool {
		d, _, err := s.f.Deployment(ctx, "d1")
		return err == nil && d.State == fleet.DeploymentAborted
	})
	b := s.browser().operator()
	// A refused label and app name come back in the message.
	csrf := b.csrf("/ui/gateways/gw-1")
	b.post("/ui/gateways/gw-1/labels", url.Values{"labels": {"site=" + evil}, "csrf": {csrf}})
	_, labelPage := b.get("/ui/gateways/gw-1")
	b.post("/ui/apps", url.Values{"name": {evil}, "kind": {"function"}, "csrf": {csrf}})
	_, appsPage := b.get("/ui/apps")
	_, appPage := b.get("/ui/apps/alarm")
	_, depPage := b.get("/ui/deployments/d1")
	_, logsPage := b.get("/ui/gateways/gw-1?logs=alarm")
	for name, body := range map[string]string{"gateway (refused label)": labelPage, "apps (refused name)": appsPage, "app": appPage, "deployment": depPage, "gateway's logs": logsPage} {
		if m := rawMarkup.FindString(body); m != "" {
			t.Errorf("the %s page holds markup from the fleet's data: %q", name, m)
		}
		if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Errorf("the %s page does not show the text as text", name)
		}
	}
	if !strings.Contains(labelPage, "label value") && !strings.Contains(labelPage, "invalid") {
		t.Errorf("the refused label's reason is not shown")
	}
	testenv.Eventually(t, "gw-1's page shows its failure reason, escaped", func() bool {
		_, body := b.get("/ui/gateways/gw-1")
		return strings.Contains(body, "&lt;img src=x onerror=alert(2)&gt;") && rawMarkup.FindString(body) == ""
	})
	// Over the event stream too.
	ev := b.events(t, "d1")
	defer ev.close()
	frame := ev.next(t)
	if rawMarkup.MatchString(frame) || !strings.Contains(frame, "&lt;script&gt;") {
		t.Errorf("the event stream's fragment holds markup: %s", frame)
	}
}

// stream is an open event stream.
type stream struct {
	resp *http.Response
	r    *bufio.Reader
}

func (b *browser) events(t testing.TB, id string) *stream {
	t.Helper()
	c := *b.c
	c.Timeout = 0
	resp, err := c.Get(b.s.url + "/ui/deployments/" + id + "/events")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("the event stream: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	return &stream{resp: resp, r: bufio.NewReader(resp.Body)}
}

// next is the next progress event's data.
func (s *stream) next(t testing.TB) string {
	t.Helper()
	var data strings.Builder
	event := ""
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatalf("the event stream ended: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if event == "progress" {
				return data.String()
			}
			event = ""
			data.Reset()
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data.WriteString(strings.TrimPrefix(line, "data: ") + "\n")
		}
	}
}

func (s *stream) close() { s.resp.Body.Close() }

var stateRE = regexp.MustCompile(`data-state="([a-z-]+)"`)

// TestLive: the event stream sends the deployment's progress as it
// moves, wave by wave, to its end, to every stream of it.
func TestLive(t *testing.T) {
	s := newSite(t, nil, false)
	ctx := context.Background()
	if _, err := s.f.CreateApp(ctx, fleet.App{Name: "alarm", Kind: app.KindFunction}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.f.AddVersion(ctx, "alarm", app.Version{Version: "1", Function: &app.FunctionVersion{
		Package: app.Artifact{URL: "https://packages.example.com/a.tgz", SHA256: strings.Repeat("ab", 32)}}}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"gw-1", "gw-2", "gw-3"} {
		if _, err := s.f.RegisterInstance(ctx, id, map[string]string{"site": "a"}); err != nil {
			t.Fatal(err)
		}
	}
	b := s.browser().operator()
	csrf := b.csrf("/ui/deployments")
	resp, _ := b.post("/ui/deployments", url.Values{"id": {"d1"}, "apps": {"alarm=1"}, "selector": {"site=a"}, "waves": {"1,100%"}, "csrf": {csrf}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/deployments/d1" {
		t.Fatalf("deploy: %s %s", resp.Status, resp.Header.Get("Location"))
	}
	streams := []*stream{b.events(t, "d1"), b.events(t, "d1")}
	for _, st := range streams {
		defer st.close()
		if f := st.next(t); !strings.Contains(f, `data-state="running"`) {
			t.Errorf("the first event: %s", f)
		}
	}
	// The gateways come online now: the page follows them.
	for _, id := range []string{"gw-1", "gw-2", "gw-3"} {
		g, err := fleettest.Start(ctx, id, s.bus, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.Stop(ctx) })
	}
	for i, st := range streams {
		for {
			f := st.next(t)
			m := stateRE.FindStringSubmatch(f)
			if m != nil && m[1] == "succeeded" {
				if !strings.Contains(f, "3 succeeded") || !strings.Contains(f, "100% of 3 gateways") {
					t.Errorf("stream %d's last event: %s", i, f)
				}
				break
			}
		}
	}
}
