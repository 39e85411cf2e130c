package webconsole

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/fleet"
	"github.com/edgekit/edgekit/edge/fleet/artifacts"
)

// signinPage shows the sign-in forms, with a CSRF token made from a
// fresh cookie of their own.
func (c *Console) signinPage(w http.ResponseWriter, r *http.Request, _ *session) {
	c.signinForm(w, r, http.StatusOK, "")
}

// signinForm renders the sign-in page, with why the last attempt failed
// ("" none).
func (c *Console) signinForm(w http.ResponseWriter, r *http.Request, status int, why string) {
	nonce := randomNonce()
	http.SetCookie(w, c.cookie(r, signinCookie, nonce, 10*time.Minute))
	c.render(w, r, nil, status, "signin", "Sign in", map[string]string{"CSRF": c.keys.csrf("signin", nonce), "Error": why})
}

func (c *Console) signin(w http.ResponseWriter, r *http.Request, _ *session) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	e := entry(r, "sign-in", "")
	ck, err := r.Cookie(signinCookie)
	if err != nil || !c.keys.checkCSRF("signin", ck.Value, r.PostFormValue("csrf")) {
		e.Actor = "unknown"
		c.audit(r, nil, e, errors.New("the sign-in form's CSRF token is missing or wrong"))
		http.Error(w, "this form's CSRF token is missing or wrong: reload the sign-in page", http.StatusForbidden)
		return
	}
	s := session{Nonce: randomNonce(), Expires: time.Now().Add(c.opts.SessionTTL).Unix()}
	if tok := r.PostFormValue("token"); tok != "" {
		e.Actor = "token"
		if subtle.ConstantTimeCompare([]byte(tok), []byte(c.opts.Token)) != 1 {
			c.audit(r, nil, e, fleet.ErrDenied)
			c.signinForm(w, r, http.StatusUnauthorized, "That token is not the fleet's.")
			return
		}
		s.Token, s.TokenID, s.Role = true, c.tokID, fleet.RoleOperator
	} else {
		name := r.PostFormValue("user")
		e.Actor = name
		if until := c.throttle.locked(name, time.Now()); !until.IsZero() {
			wait := time.Until(until).Round(time.Second)
			c.audit(r, nil, e, fmt.Errorf("%w: locked for %s after repeated wrong passwords", fleet.ErrDenied, wait))
			c.signinForm(w, r, http.StatusUnauthorized, fmt.Sprintf("Too many wrong passwords for this name: try again in %s.", wait))
			return
		}
		c.signins <- struct{}{}
		u, err := c.f.SignIn(r.Context(), name, r.PostFormValue("password"))
		<-c.signins
		if err != nil {
			if errors.Is(err, fleet.ErrDenied) {
				c.throttle.failed(name, time.Now())
			}
			c.audit(r, nil, e, err)
			c.signinForm(w, r, http.StatusUnauthorized, "Wrong user name or password.")
			return
		}
		c.throttle.succeeded(name)
		s.User, s.Role = u.Name, u.Role
	}
	http.SetCookie(w, c.cookie(r, signinCookie, "", -1))
	http.SetCookie(w, c.cookie(r, sessionCookie, c.keys.seal(sessionCookie, s), c.opts.SessionTTL))
	c.audit(r, &s, e, nil)
	http.Redirect(w, r, Prefix+"/gateways", http.StatusSeeOther)
}

func (c *Console) signout(w http.ResponseWriter, r *http.Request, s *session) {
	http.SetCookie(w, c.cookie(r, sessionCookie, "", -1))
	c.audit(r, s, entry(r, "sign-out", ""), nil)
	http.Redirect(w, r, Prefix+"/signin", http.StatusSeeOther)
}

// gatewaysData is the gateways page: a query's page of instances.
type gatewaysData struct {
	Query fleet.InstanceQuery
	Page  fleet.InstancePage
	// First is the link to the query's first page, NextLink to the next.
	First, NextLink string
	Err             string
}

func (c *Console) gateways(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	query := fleet.InstanceQuery{Selector: q.Get("selector"), Presence: q.Get("presence"), Rollout: q.Get("rollout"), After: q.Get("after")}
	query.Limit = 50
	if n, err := strconv.Atoi(q.Get("limit")); err == nil && n > 0 {
		query.Limit = min(n, 500)
	}
	d := gatewaysData{Query: query}
	page, err := c.f.QueryInstances(r.Context(), query)
	status := http.StatusOK
	if err != nil {
		d.Err, status = err.Error(), statusOf(err)
	}
	d.Page = page
	link := url.Values{}
	for k, v := range map[string]string{"selector": query.Selector, "presence": query.Presence, "rollout": query.Rollout} {
		if v != "" {
			link.Set(k, v)
		}
	}
	d.First = Prefix + "/gateways?" + link.Encode()
	if page.Next != "" {
		link.Set("after", page.Next)
		d.NextLink = Prefix + "/gateways?" + link.Encode()
	}
	c.render(w, r, s, status, "gateways", "Gateways", d)
}

type gatewayData struct {
	In      fleet.InstanceView
	History []app.Status
	Labels  string
	// LogsOf is the app whose logs were asked for ("" none); Logs the
	// gateway's answer, LogsErr why there is none.
	LogsOf, Contains string
	Limit            int
	Logs             *app.LogsReply
	LogsErr          string
}

func (c *Console) gateway(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	in, err := c.f.Instance(r.Context(), id)
	if err != nil {
		c.renderError(w, r, s, statusOf(err), err)
		return
	}
	hist, err := c.f.StatusHistory(r.Context(), id)
	if err != nil {
		c.renderError(w, r, s, statusOf(err), err)
		return
	}
	d := gatewayData{In: in, History: hist, Labels: labelText(in.Labels), LogsOf: r.URL.Query().Get("logs"), Contains: r.URL.Query().Get("contains"), Limit: 200}
	if n, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && n > 0 {
		d.Limit = min(n, app.MaxLogLines)
	}
	if d.LogsOf != "" {
		reply, err := c.f.Logs(r.Context(), id, app.LogsRequest{App: d.LogsOf, Limit: d.Limit, Contains: d.Contains})
		if err != nil {
			d.LogsErr = err.Error()
		} else {
			d.Logs = &reply
		}
	}
	c.render(w, r, s, http.StatusOK, "gateway", "Gateway "+id, d)
}

func (c *Console) setLabels(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	text := r.PostFormValue("labels")
	e := entry(r, "label", id)
	e.Detail = text
	labels, err := fleet.ParseLabels(text)
	if err == nil {
		_, err = c.f.RegisterInstance(r.Context(), id, labels)
	}
	c.finish(w, r, s, e, Prefix+"/gateways/"+url.PathEscape(id), "Labels of "+id+" set.", err)
}

func (c *Console) apps(w http.ResponseWriter, r *http.Request, s *session) {
	apps, err := c.f.Apps(r.Context())
	if err != nil {
		c.renderError(w, r, s, http.StatusInternalServerError, err)
		return
	}
	c.render(w, r, s, http.StatusOK, "apps", "Apps", apps)
}

func (c *Console) createApp(w http.ResponseWriter, r *http.Request, s *session) {
	a := fleet.App{Name: strings.TrimSpace(r.PostFormValue("name")), Kind: app.Kind(r.PostFormValue("kind")), Description: r.PostFormValue("description")}
	e := entry(r, "create-app", a.Name)
	e.Detail = string(a.Kind)
	_, err := c.f.CreateApp(r.Context(), a)
	loc := Prefix + "/apps"
	if err == nil {
		loc += "/" + url.PathEscape(a.Name)
	}
	c.finish(w, r, s, e, loc, "App "+a.Name+" created.", err)
}

// appData is an app's page: its versions, and the diff of two versions'
// configurations.
type appData struct {
	App      fleet.App
	Versions []fleet.Version
	// From and To are the versions compared; Diff their configurations'
	// lines.
	From, To string
	Diff     []diffLine
	Uploads  bool // packages can be uploaded here
}

func (c *Console) app(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("app")
	a, err := c.f.App(r.Context(), name)
	if err != nil {
		c.renderError(w, r, s, statusOf(err), err)
		return
	}
	vs, err := c.f.Versions(r.Context(), name)
	if err != nil {
		c.renderError(w, r, s, statusOf(err), err)
		return
	}
	d := appData{App: a, Versions: vs, From: r.URL.Query().Get("from"), To: r.URL.Query().Get("to"), Uploads: c.opts.Artifacts != nil}
	if len(vs) >= 2 && d.From == "" && d.To == "" {
		d.From, d.To = vs[len(vs)-2].Version.Version, vs[len(vs)-1].Version.Version
	}
	var from, to *fleet.Version
	for i := range vs {
		switch vs[i].Version.Version {
		case d.From:
			from = &vs[i]
		case d.To:
			to = &vs[i]
		}
	}
	if from != nil && to != nil {
		d.Diff = diffLines(prettyJSON(from.Version.Config), prettyJSON(to.Version.Config))
	}
	c.render(w, r, s, http.StatusOK, "app", "App "+name, d)
}

// addVersion takes the version form: multipart, its fields first and
// the package (if any) last, streamed into the artifact store as it
// comes.
func (c *Console) addVersion(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("app")
	e := entry(r, "add-version", name)
	back := Prefix + "/apps/" + url.PathEscape(name)
	form, err := c.readVersionForm(r, name)
	e.Object = name + " " + form.Version
	if err == nil {
		var v app.Version
		if v, err = form.Build(); err == nil {
			_, err = c.f.AddVersion(r.Context(), name, v)
		}
	}
	c.finish(w, r, s, e, back, "Version "+form.Version+" of "+name+" added.", err)
}

// readVersionForm reads the version form. A package part is stored (its
// digest computed as it streams) and its manifest recorded with the
// signature the form gives.
func (c *Console) readVersionForm(r *http.Request, appName string) (fleet.VersionForm, error) {
	var vf fleet.VersionForm
	mr, err := r.MultipartReader()
	if err != nil {
		return vf, fmt.Errorf("%w: the version form: %v", fleet.ErrInvalid, err)
	}
	var signature string
	var blob *artifacts.Blob
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return vf, fmt.Errorf("%w: the version form: %v", fleet.ErrInvalid, err)
		}
		if p.FormName() == "package" {
			if p.FileName() == "" {
				_, _ = io.Copy(io.Discard, p)
				continue
			}
			if c.opts.Artifacts == nil {
				return vf, fmt.Errorf("%w: this console takes no package uploads", fleet.ErrInvalid)
			}
			b, err := c.opts.Artifacts.Put(r.Context(), io.LimitReader(p, c.opts.MaxUpload+1), "")
			if err != nil {
				return vf, fmt.Errorf("the package %s: %w", p.FileName(), err)
			}
			if b.Size > c.opts.MaxUpload {
				return vf, fmt.Errorf("%w: the package %s is over %d bytes", fleet.ErrInvalid, p.FileName(), c.opts.MaxUpload)
			}
			blob = &b
			continue
		}
		val, err := formValue(p)
		if err != nil {
			return vf, err
		}
		switch p.FormName() {
		case "version":
			vf.Version = strings.TrimSpace(val)
		case "image":
			vf.Image = val
		case "container":
			vf.Container = val
		case "triggers":
			vf.Triggers = val
		case "config":
			vf.Config = val
		case "probation":
			vf.Probation = val
		case "signature":
			signature = strings.TrimSpace(val)
		}
	}
	if blob == nil {
		if signature != "" {
			return vf, fmt.Errorf("%w: a signature was given without a package", fleet.ErrInvalid)
		}
		return vf, nil
	}
	m := artifacts.Manifest{App: appName, Version: vf.Version, SHA256: blob.SHA256, Size: blob.Size}
	if signature != "" {
		sig, err := hex.DecodeString(signature)
		if err != nil {
			return vf, fmt.Errorf("%w: signature: want the ed25519 signature of the package's SHA-256 in hex", fleet.ErrInvalid)
		}
		m.Signatures = [][]byte{sig}
	}
	if err := c.opts.Artifacts.PutManifest(m); err != nil {
		return vf, fmt.Errorf("%w: %w", fleet.ErrInvalid, err)
	}
	a := m.Artifact(c.opts.ArtifactBase)
	vf.Package = &a
	return vf, nil
}

// formValue reads a multipart field of at most 1 MiB.
func formValue(p *multipart.Part) (string, error) {
	b, err := io.ReadAll(io.LimitReader(p, 1<<20+1))
	if err != nil {
		return "", fmt.Errorf("%w: the field %s: %v", fleet.ErrInvalid, p.FormName(), err)
	}
	if len(b) > 1<<20 {
		return "", fmt.Errorf("%w: the field %s is over 1 MiB", fleet.ErrInvalid, p.FormName())
	}
	return string(b), nil
}

type deploymentsData struct {
	Deployments []fleet.Deployment
	Apps        []fleet.App
}

func (c *Console) deployments(w http.ResponseWriter, r *http.Request, s *session) {
	ds, err := c.f.Deployments(r.Context())
	if err != nil {
		c.renderError(w, r, s, http.StatusInternalServerError, err)
		return
	}
	slices.SortStableFunc(ds, func(a, b fleet.Deployment) int { return b.Created.Compare(a.Created) }) // newest first
	apps, _ := c.f.Apps(r.Context())
	c.render(w, r, s, http.StatusOK, "deployments", "Deployments", deploymentsData{Deployments: ds, Apps: apps})
}

func (c *Console) deploy(w http.ResponseWriter, r *http.Request, s *session) {
	id := strings.TrimSpace(r.PostFormValue("id"))
	e := entry(r, "deploy", id)
	d, err := deploymentForm(r)
	e.Detail = fmt.Sprintf("selector %q, apps %s, priority %d, waves %q", d.Selector, r.PostFormValue("apps"), d.Priority, r.PostFormValue("waves"))
	if err == nil {
		_, err = c.f.Deploy(r.Context(), d)
	}
	loc := Prefix + "/deployments"
	if err == nil {
		loc += "/" + url.PathEscape(id)
	}
	c.finish(w, r, s, e, loc, "Deployment "+id+" created: it rolls out now.", err)
}

// deploymentForm reads the deployment form; the error names the field.
func deploymentForm(r *http.Request) (fleet.Deployment, error) {
	f := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	d := fleet.Deployment{ID: f("id"), Selector: f("selector")}
	var err error
	num := func(k string, set func(float64)) {
		if v := f(k); v != "" && err == nil {
			n, perr := strconv.ParseFloat(v, 64)
			if perr != nil {
				err = fmt.Errorf("%w: %s %q: want a number", fleet.ErrInvalid, k, v)
				return
			}
			set(n)
		}
	}
	num("priority", func(n float64) { d.Priority = int(n) })
	num("success", func(n float64) { d.Policy.SuccessPercent = n })
	num("failure", func(n float64) { d.Policy.FailurePercent = n })
	num("minSample", func(n float64) { d.Policy.MinSample = int(n) })
	num("maxPerMinute", func(n float64) { d.Policy.MaxPerMinute = int(n) })
	if err != nil {
		return d, err
	}
	d.Policy.OnFailure = f("onFailure")
	if d.Apps, err = fleet.ParseAppVersions(f("apps")); err != nil {
		return d, err
	}
	if d.Policy.Waves, err = fleet.ParseWaves(f("waves")); err != nil {
		return d, err
	}
	if b := f("bake"); b != "" {
		dur, perr := time.ParseDuration(b)
		if perr != nil || dur < 0 {
			return d, fmt.Errorf("%w: bake %q: want a duration such as 5m", fleet.ErrInvalid, b)
		}
		d.Policy.Bake = app.Duration(dur)
	}
	return d, nil
}

func (c *Console) deployment(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	d, ts, err := c.f.Deployment(r.Context(), id)
	if err != nil {
		c.renderError(w, r, s, statusOf(err), err)
		return
	}
	p := newProgress(d, ts, time.Now())
	c.render(w, r, s, http.StatusOK, "deployment", "Deployment "+id, deploymentData{Progress: p, Events: Prefix + "/deployments/" + url.PathEscape(id) + "/events"})
}

type deploymentData struct {
	Progress *progress
	Events   string
}

// command pauses, resumes, cancels or rolls back a deployment.
func (c *Console) command(w http.ResponseWriter, r *http.Request, s *session) {
	id, cmd := r.PathValue("id"), r.PathValue("command")
	e := entry(r, cmd, id)
	ctx := r.Context()
	var err error
	var done string
	switch cmd {
	case "pause":
		reason := strings.TrimSpace(r.PostFormValue("reason"))
		e.Detail = reason
		err, done = c.f.Pause(ctx, id, reason), "Paused."
	case "resume":
		err, done = c.f.Resume(ctx, id), "Resumed."
	case "cancel":
		err, done = c.f.Cancel(ctx, id, false), "Cancelled."
	case "rollback":
		err, done = c.f.Cancel(ctx, id, true), "Cancelled; the instances it reached go back to what they ran before."
	default:
		err = fmt.Errorf("%w: no command %q (pause, resume, cancel, rollback)", fleet.ErrNotFound, cmd)
	}
	c.finish(w, r, s, e, Prefix+"/deployments/"+url.PathEscape(id), done, err)
}

type auditData struct {
	Day, Before, After string
	Entries            []fleet.AuditEntry
}

func (c *Console) auditPage(w http.ResponseWriter, r *http.Request, s *session) {
	day := time.Now().UTC()
	if q := r.URL.Query().Get("day"); q != "" {
		t, err := time.Parse(time.DateOnly, q)
		if err != nil {
			c.renderError(w, r, s, http.StatusBadRequest, fmt.Errorf("%w: day %q: want YYYY-MM-DD", fleet.ErrInvalid, q))
			return
		}
		day = t
	}
	es, err := c.f.AuditDay(r.Context(), day)
	if err != nil {
		c.renderError(w, r, s, http.StatusInternalServerError, err)
		return
	}
	c.render(w, r, s, http.StatusOK, "audit", "Audit log", auditData{Day: day.Format(time.DateOnly), Before: day.AddDate(0, 0, -1).Format(time.DateOnly),
		After: day.AddDate(0, 0, 1).Format(time.DateOnly), Entries: es})
}

// events streams a deployment's progress as Server-Sent Events: the live
// fragment of its page, at once and after every change.
func (c *Console) events(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	sub, first, err := c.live.subscribe(r.Context(), id)
	if err != nil {
		http.Error(w, err.Error(), statusOf(err))
		return
	}
	defer c.live.unsubscribe(sub)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send(first) {
		return
	}
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-c.live.done:
			return
		case b := <-sub.ch:
			if !send(b) {
				return
			}
		case <-keep.C:
			// A session that ended (its user removed, its token
			// changed, its time up) ends the stream.
			if _, err := c.session(r.WithContext(context.WithoutCancel(r.Context()))); err != nil {
				_ = send([]byte("event: signedout\ndata: " + err.Error() + "\n\n"))
				return
			}
			if !send([]byte(": keep-alive\n\n")) {
				return
			}
		}
	}
}
