package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/function/codepkg"
	"github.com/edgekit/edgekit/internal/safefile"
)

// The example's deployment file is a deployment document (docs/DEPLOYMENTS.md)
// in every respect but one: a function's package may be "dir:<path>", a
// function directory (function.json and the code) relative to the file.
// The example packs each such directory into a package stamped with the
// app's name and version, fills in its URL, size and digest, and writes
// the result where the gateway watches for deployments. When the file or
// a directory changes, it does it again with the next revision: change a
// version or a configuration in the file and watch the gateway swap it.

// renderer keeps the rendered deployment up to date with its template.
type renderer struct {
	template string // the example's deployment file
	packages string // where packed packages go
	out      string // the file the gateway watches
	log      *slog.Logger
	last     [32]byte // what the last render was made of
	seen     [32]byte // the template and the directories' files (names, sizes, times) at the last render
	revision uint64
	// containers says whether the gateway runs container apps: without
	// them the template's container apps are left out.
	containers bool
}

// fingerprint sums the template and the names, sizes and times of the
// files in the directories it names: a change to any is a change to
// render, and none spares the packing.
func (r *renderer) fingerprint(raw []byte, d *app.Deployment) [32]byte {
	h := sha256.New()
	h.Write(raw)
	for _, a := range d.Apps {
		if a.Version.Function == nil || !strings.HasPrefix(a.Version.Function.Package.URL, "dir:") {
			continue
		}
		_ = filepath.WalkDir(r.dir(a.Version.Function.Package.URL), func(path string, e fs.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				if st, err := e.Info(); err == nil {
					fmt.Fprintf(h, "%s %d %d\n", path, st.Size(), st.ModTime().UnixNano())
				}
			}
			return nil
		})
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// dir is the directory a "dir:" URL names, relative to the template.
func (r *renderer) dir(url string) string {
	dir := strings.TrimPrefix(url, "dir:")
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(filepath.Dir(r.template), dir)
	}
	return dir
}

// render packs the template's directories and writes the deployment when
// anything changed; it returns the revision written, or 0 when nothing
// changed.
func (r *renderer) render() (uint64, error) {
	raw, err := os.ReadFile(r.template)
	if err != nil {
		return 0, err
	}
	var d app.Deployment
	if err := json.Unmarshal(raw, &d); err != nil {
		return 0, fmt.Errorf("%s: %w", r.template, err)
	}
	if !r.containers {
		d.Apps = slices.DeleteFunc(d.Apps, func(a app.Assignment) bool { return a.App.Kind == app.KindContainer })
	}
	seen := r.fingerprint(raw, &d)
	if seen == r.seen {
		return 0, nil
	}
	if err := os.MkdirAll(r.packages, 0o755); err != nil {
		return 0, err
	}
	h := sha256.New()
	h.Write(raw)
	for i := range d.Apps {
		a := &d.Apps[i]
		if a.Version.Function == nil || !strings.HasPrefix(a.Version.Function.Package.URL, "dir:") {
			continue
		}
		dir := r.dir(a.Version.Function.Package.URL)
		packed, err := codepkg.Pack(dir, r.packages, a.App.Name, a.Version.Version)
		path, size, sum := packed.Path, packed.Size, packed.SHA256
		if err != nil {
			return 0, fmt.Errorf("%s: app %s: %w", r.template, a.App.Name, err)
		}
		h.Write(sum[:])
		a.Version.Function.Package = app.Artifact{URL: "file://" + path, Size: size, SHA256: hex.EncodeToString(sum[:])}
	}
	var made [32]byte
	copy(made[:], h.Sum(nil))
	r.seen = seen
	if made == r.last {
		return 0, nil
	}
	// The next revision: above the template's, and above the one the
	// gateway runs (kept in the file it watches).
	var before app.Deployment
	if b, err := os.ReadFile(r.out); err == nil {
		_ = json.Unmarshal(b, &before)
	}
	d.Revision = max(d.Revision, before.Revision+1, r.revision+1)
	if d.Schema == 0 {
		d.Schema = app.SchemaVersion
	}
	if err := d.Check(); err != nil {
		return 0, fmt.Errorf("%s: %w", r.template, err)
	}
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return 0, err
	}
	if err := safefile.Write(r.out, out, 0o600); err != nil {
		return 0, err
	}
	r.last, r.revision = made, d.Revision
	return d.Revision, nil
}

// watch renders again whenever the template or a directory changes,
// until ctx ends.
func (r *renderer) watch(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rev, err := r.render()
		switch {
		case err != nil:
			r.log.Warn("the example's deployment file is not rendered", "err", err)
		case rev != 0:
			r.log.Info("the example's deployment changed", "revision", rev)
		}
	}
}
