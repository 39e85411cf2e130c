package webconsole

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/edgekit/edgekit/edge/fleet"
)

//go:embed templates/*.html assets/*
var files embed.FS

// pages are the parsed templates: one set per page (the layout and the
// page's content), and the live fragment of a deployment on its own.
type pages struct {
	byName map[string]*template.Template
	live   *template.Template
}

var funcs = template.FuncMap{
	"when":   when,
	"labels": labelText,
	"json":   prettyJSON,
	"add":    func(a, b int) int { return a + b },
	"hidden": func(state fleet.DeploymentState, when ...string) bool {
		for _, w := range when {
			if string(state) == w {
				return false
			}
		}
		return true
	},
}

func parsePages() (*pages, error) {
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/live.html")
	if err != nil {
		return nil, fmt.Errorf("webconsole: templates: %w", err)
	}
	names, _ := fs.Glob(files, "templates/*.html")
	p := &pages{byName: map[string]*template.Template{}}
	for _, n := range names {
		base := path.Base(n)
		if base == "layout.html" || base == "live.html" {
			continue
		}
		t, err := template.Must(layout.Clone()).ParseFS(files, n)
		if err != nil {
			return nil, fmt.Errorf("webconsole: template %s: %w", base, err)
		}
		p.byName[strings.TrimSuffix(base, ".html")] = t
	}
	p.live = layout.Lookup("live")
	if p.live == nil {
		return nil, errors.New("webconsole: templates: no live fragment")
	}
	return p, nil
}

// view is what every page is given: the page's own data, and the
// layout's (who is signed in, their CSRF token, a message).
type view struct {
	Title    string
	Nav      string
	Actor    string
	Role     fleet.Role
	Operator bool
	CSRF     string
	Flash    *flash
	Data     any
}

// flash is the message a POST leaves for the page it redirects to.
type flash struct {
	Error bool   `json:"e,omitempty"`
	Text  string `json:"t"`
}

// render writes a page. Its body is built before anything is written, so
// a template error is a clean 500.
func (c *Console) render(w http.ResponseWriter, r *http.Request, s *session, status int, page, title string, data any) {
	v := view{Title: title, Nav: page, Data: data, Flash: c.takeFlash(w, r)}
	if s != nil {
		v.Actor, v.Role, v.Operator, v.CSRF = s.actor(), s.Role, s.Role == fleet.RoleOperator, c.keys.csrf("session", s.Nonce)
	}
	t := c.pages.byName[page]
	var buf bytes.Buffer
	if t == nil {
		c.log.Error("webconsole: no template", "page", page)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if err := t.ExecuteTemplate(&buf, "layout.html", v); err != nil {
		c.log.Error("webconsole: rendering a page", "page", page, "err", err)
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// renderError shows err on a page of its own.
func (c *Console) renderError(w http.ResponseWriter, r *http.Request, s *session, status int, err error) {
	c.render(w, r, s, status, "error", http.StatusText(status), err.Error())
}

// fromScript reports whether the page's script sent the request (it
// sets the CSRF header): it is answered with JSON, not a redirect.
func fromScript(r *http.Request) bool { return r.Header.Get("X-CSRF-Token") != "" }

// finish ends a POST: the action is audited, and the browser goes to
// location with a message (done, or why not) in a cookie for that page.
// The page's script is answered {"location": …, "message": …}, or the
// error with its status, and shows the message itself.
func (c *Console) finish(w http.ResponseWriter, r *http.Request, s *session, e fleet.AuditEntry, location, done string, err error) {
	c.audit(r, s, e, err)
	if fromScript(r) {
		if err != nil {
			http.Error(w, err.Error(), statusOf(err))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"location": location, "message": done})
		return
	}
	if err != nil {
		c.setFlash(w, r, flash{Error: true, Text: err.Error()})
	} else {
		c.setFlash(w, r, flash{Text: done})
	}
	http.Redirect(w, r, location, http.StatusSeeOther)
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, fleet.ErrExists), errors.Is(err, fleet.ErrState):
		return http.StatusConflict
	case errors.Is(err, fleet.ErrDenied):
		return http.StatusForbidden
	}
	return http.StatusBadRequest
}

// maxFlash bounds a flash message (a cookie holds about 4 KB).
const maxFlash = 1500

func (c *Console) setFlash(w http.ResponseWriter, r *http.Request, f flash) {
	if len(f.Text) > maxFlash {
		f.Text = f.Text[:maxFlash] + "…"
	}
	http.SetCookie(w, c.cookie(r, flashCookie, c.keys.seal(flashCookie, f), time.Minute))
}

func (c *Console) takeFlash(w http.ResponseWriter, r *http.Request) *flash {
	ck, err := r.Cookie(flashCookie)
	if err != nil {
		return nil
	}
	http.SetCookie(w, c.cookie(r, flashCookie, "", -1))
	var f flash
	if c.keys.open(flashCookie, ck.Value, &f) != nil {
		return nil
	}
	return &f
}

func (c *Console) asset(w http.ResponseWriter, r *http.Request, _ *session) {
	name := r.PathValue("file")
	b, err := files.ReadFile("assets/" + path.Base(name))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	switch path.Ext(name) {
	case ".css":
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
	case ".js":
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	case ".svg":
		w.Header().Set("Content-Type", "image/svg+xml")
	}
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(b)
}

// when shows a time in UTC inside a <time> element that the page's
// script turns into the browser's time zone.
func when(t time.Time) template.HTML {
	if t.IsZero() {
		return "—"
	}
	t = t.UTC()
	return template.HTML(`<time datetime="` + t.Format(time.RFC3339Nano) + `">` + t.Format("2006-01-02 15:04:05") + ` UTC</time>`)
}

func labelText(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(k + "=" + m[k])
	}
	return b.String()
}

func prettyJSON(v any) string {
	if raw, ok := v.(json.RawMessage); ok {
		var out bytes.Buffer
		if len(raw) == 0 {
			return ""
		}
		if json.Indent(&out, raw, "", "  ") == nil {
			return out.String()
		}
		return string(raw)
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
