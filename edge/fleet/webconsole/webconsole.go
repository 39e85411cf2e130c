// Package webconsole is the fleet's web console: server-rendered pages
// over a fleet.Fleet for the people who run it — the gateways (presence,
// running revision, labels; filtered and paged for tens of thousands),
// one gateway (its apps' phases and reasons, its status history), apps
// and their versions (create an app, add a version by uploading a
// package or naming an image, the configuration with a diff between
// versions), deployments (create one with a selector, priority and
// waves; live progress per wave over Server-Sent Events with a chart of
// succeeded, failed and pending over time; pause, resume, cancel, roll
// back), and the audit log of who did what.
//
// It is an http.Handler for the paths under Prefix, served beside the
// fleet's API (package fleetapi) on the fleet program's listener; it does
// nothing the API cannot do. Its templates, style sheet and script are
// embedded: nothing to build, no request leaves the page's origin.
//
// Access: a person signs in with the API token (an operator) or a user
// name and password from the fleet's store (fleet.SetUser, a viewer or
// an operator). The session is a cookie signed with a key kept in the
// fleet's store (so replicas share it): HttpOnly, SameSite=Strict, Secure
// on TLS (or Options.Secure behind a TLS proxy), valid for
// Options.SessionTTL. A user's role is read at every request, so a
// changed role takes effect at once. Every form carries a CSRF token made
// from the session; every POST without it is refused. Nothing but the
// sign-in page and the assets renders without a session. Every action,
// done or refused, goes to the fleet's audit log.
//
// Close ends the live streams; it is safe to call twice.
package webconsole

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/edgekit/edgekit/edge/fleet"
	"github.com/edgekit/edgekit/edge/fleet/artifacts"
)

// Prefix is the path under which the console serves.
const Prefix = "/ui"

// Options configure a Console. Token is required.
type Options struct {
	// Token is the fleet's API token: signing in with it makes an
	// operator session.
	Token string
	// Artifacts stores uploaded packages; nil: versions can only name an
	// image or an artifact URL. ArtifactBase is the URL gateways fetch
	// them from (the fleet program's, e.g. http://fleet.example:7700).
	Artifacts    *artifacts.Server
	ArtifactBase string
	// Secure sets the Secure flag on the cookies even when the request
	// came without TLS (the console behind a TLS-terminating proxy).
	Secure bool
	// SessionTTL is how long a session lasts; default 12 h.
	SessionTTL time.Duration
	// MaxUpload bounds an uploaded package; default 256 MiB.
	MaxUpload int64
	// Poll is how often live pages look for changes; default 250 ms.
	Poll   time.Duration
	Logger *slog.Logger
}

// Console is the web console. It is safe for concurrent use.
type Console struct {
	f     *fleet.Fleet
	opts  Options
	log   *slog.Logger
	keys  signer
	tokID string
	mux   *http.ServeMux
	pages *pages
	live  *live
	// signins bounds the password checks running at once (each costs
	// PBKDF2's 600,000 rounds); throttle locks out a name after repeated
	// wrong passwords.
	signins  chan struct{}
	throttle throttle

	closeOnce sync.Once
}

// New returns the console of f. It reads (or, the first time, makes) the
// session key in f's store.
func New(ctx context.Context, f *fleet.Fleet, opts *Options) (*Console, error) {
	if f == nil || opts == nil || len(opts.Token) < 16 {
		return nil, fmt.Errorf("webconsole: %w: a fleet and a token of at least 16 characters are required", fleet.ErrInvalid)
	}
	o := *opts
	if o.SessionTTL <= 0 {
		o.SessionTTL = 12 * time.Hour
	}
	if o.MaxUpload <= 0 {
		o.MaxUpload = 256 << 20
	}
	if o.Poll <= 0 {
		o.Poll = 250 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.ArtifactBase = strings.TrimSuffix(o.ArtifactBase, "/")
	key, err := f.Secret(ctx, "console-session")
	if err != nil {
		return nil, fmt.Errorf("webconsole: %w", err)
	}
	pg, err := parsePages()
	if err != nil {
		return nil, err
	}
	c := &Console{f: f, opts: o, log: o.Logger, keys: signer{key: key}, tokID: tokenID(o.Token), mux: http.NewServeMux(), pages: pg,
		signins: make(chan struct{}, 2)}
	c.live = newLive(c)
	c.routes()
	return c, nil
}

// Close ends the live streams and waits for their goroutines, or for
// ctx. Safe to call twice.
func (c *Console) Close(ctx context.Context) error {
	var err error
	c.closeOnce.Do(func() { err = c.live.close(ctx) })
	return err
}

// ServeHTTP answers the console's paths (under Prefix).
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	c.mux.ServeHTTP(w, r)
}

// access is what a route needs of its caller.
type access int

const (
	public   access = iota // the sign-in page and the assets
	viewer                 // any session
	operator               // an operator's session
)

// handler is a route's work, given the caller's session (nil on public
// routes).
type handler func(w http.ResponseWriter, r *http.Request, s *session)

func (c *Console) routes() {
	add := func(pattern string, need access, h handler) {
		var g guarded
		switch {
		case strings.HasPrefix(pattern, "POST "):
			g.post, g.maxBody = true, 1<<20
			if strings.HasSuffix(pattern, "/versions") { // a package upload
				g.maxBody = c.opts.MaxUpload + 1<<20
			}
		case !strings.HasSuffix(pattern, "/events"):
			g.page = true
		}
		c.mux.Handle(pattern, c.guard(need, g, h))
	}
	add("GET "+Prefix+"/assets/{file}", public, c.asset)
	add("GET "+Prefix+"/signin", public, c.signinPage)
	add("POST "+Prefix+"/signin", public, c.signin)
	add("POST "+Prefix+"/signout", viewer, c.signout)
	add("GET "+Prefix+"/{$}", viewer, func(w http.ResponseWriter, r *http.Request, _ *session) {
		http.Redirect(w, r, Prefix+"/gateways", http.StatusSeeOther)
	})
	add("GET "+Prefix+"/gateways", viewer, c.gateways)
	add("GET "+Prefix+"/gateways/{id}", viewer, c.gateway)
	add("POST "+Prefix+"/gateways/{id}/labels", operator, c.setLabels)
	add("GET "+Prefix+"/apps", viewer, c.apps)
	add("POST "+Prefix+"/apps", operator, c.createApp)
	add("GET "+Prefix+"/apps/{app}", viewer, c.app)
	add("POST "+Prefix+"/apps/{app}/versions", operator, c.addVersion)
	add("GET "+Prefix+"/deployments", viewer, c.deployments)
	add("POST "+Prefix+"/deployments", operator, c.deploy)
	add("GET "+Prefix+"/deployments/{id}", viewer, c.deployment)
	add("GET "+Prefix+"/deployments/{id}/events", viewer, c.events)
	add("POST "+Prefix+"/deployments/{id}/{command}", operator, c.command)
	add("GET "+Prefix+"/audit", viewer, c.auditPage)
}

// guarded is what guard knows of a route: a page (whose caller without
// a session goes to the sign-in page), or a POST (refused without its
// CSRF token; its body bounded), or neither (the event stream).
type guarded struct {
	page, post bool
	maxBody    int64
}

// guard checks a request's session, role and (on a POST) CSRF token
// before h runs. A page without a session goes to the sign-in page; the
// event stream and every POST are refused outright.
func (c *Console) guard(need access, g guarded, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if need == public {
			h(w, r, nil)
			return
		}
		s, err := c.session(r)
		if err != nil {
			if g.page {
				http.Redirect(w, r, Prefix+"/signin", http.StatusSeeOther)
				return
			}
			http.Error(w, "sign in first: "+err.Error(), http.StatusUnauthorized)
			return
		}
		if g.post {
			r.Body = http.MaxBytesReader(w, r.Body, g.maxBody)
			if !c.keys.checkCSRF("session", s.Nonce, csrfOf(r)) {
				c.audit(r, s, entry(r, "refused", "a form without its CSRF token"), errors.New("CSRF token missing or wrong"))
				http.Error(w, "this form's CSRF token is missing or wrong: reload the page and try again", http.StatusForbidden)
				return
			}
		}
		if need == operator && s.Role != fleet.RoleOperator {
			c.audit(r, s, entry(r, "refused", r.Method+" "+r.URL.Path), fmt.Errorf("%w: a %s may not do this", fleet.ErrDenied, s.Role))
			c.renderError(w, r, s, http.StatusForbidden, fmt.Errorf("%w: signed in as a %s, you may look but not change anything", fleet.ErrDenied, s.Role))
			return
		}
		h(w, r, s)
	})
}

// csrfOf is the CSRF token a POST carries: the header the page's script
// sets, a urlencoded form's field, or else the form's address (the
// multipart version form carries it there, so that it is checked before
// the upload is read).
func csrfOf(r *http.Request) string {
	if v := r.Header.Get("X-CSRF-Token"); v != "" {
		return v
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		return r.PostFormValue("csrf")
	}
	return r.URL.Query().Get("csrf")
}

// session reads and checks the request's session: its signature, its
// expiry, its token or its user (who must still exist; the role is
// theirs now).
func (c *Console) session(r *http.Request) (*session, error) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, errors.New("no session")
	}
	var s session
	if err := c.keys.open(sessionCookie, ck.Value, &s); err != nil {
		return nil, fmt.Errorf("the session cookie: %w", err)
	}
	if time.Now().Unix() > s.Expires {
		return nil, errors.New("the session has expired")
	}
	if s.Token {
		if s.TokenID != c.tokID {
			return nil, errors.New("the token the session was made with has changed")
		}
		s.Role = fleet.RoleOperator
		return &s, nil
	}
	u, err := c.f.User(r.Context(), s.User)
	if err != nil {
		return nil, fmt.Errorf("the session's user: %w", err)
	}
	s.Role = u.Role
	return &s, nil
}

// entry starts an audit entry for a request.
func entry(r *http.Request, action, object string) fleet.AuditEntry {
	return fleet.AuditEntry{Action: action, Object: object, Remote: r.RemoteAddr}
}

// audit records what a session's holder did (err nil) or was refused.
// An entry that cannot be written is logged: the action stands.
func (c *Console) audit(r *http.Request, s *session, e fleet.AuditEntry, err error) {
	if s != nil {
		e.Actor, e.Role = s.actor(), s.Role
	}
	if err != nil {
		e.Error = err.Error()
	}
	if werr := c.f.Audit(context.WithoutCancel(r.Context()), e); werr != nil {
		c.log.Error("webconsole: writing the audit log", "action", e.Action, "object", e.Object, "actor", e.Actor, "err", werr)
	}
}
