package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/state"
	"github.com/edgekit/edgekit/function/codepkg"
	"github.com/edgekit/edgekit/internal/backoff"
)

// defaultClient answers or fails within 30 s at each stage of a request;
// the body's transfer is bounded by the stall timeout instead.
func defaultClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 30 * time.Second
	t.ResponseHeaderTimeout = 30 * time.Second
	return &http.Client{Transport: t}
}

// fetch makes every artifact of the changed apps present: function
// packages installed, container images pulled. Nothing runs differently
// yet.
func (r *Reconciler) fetch(ctx context.Context, d *app.Deployment, changed map[string]bool) error {
	for _, a := range d.Apps {
		if !changed[a.App.Name] {
			continue
		}
		var err error
		switch a.App.Kind {
		case app.KindFunction:
			err = r.fetchPackage(ctx, a)
		case app.KindContainer:
			err = r.pullImage(ctx, a)
		}
		if err != nil {
			return err
		}
		r.setApp(a.App.Name, func(st *app.AppStatus) { st.Phase = app.PhaseInstalling })
	}
	return nil
}

// retry runs try up to FetchAttempts times, waiting with backoff between
// tries, until it succeeds, says its error is final, or ctx ends.
func (r *Reconciler) retry(ctx context.Context, what string, try func() (final bool, err error)) error {
	policy := backoff.Policy{Min: r.opts.RetryMin, Max: r.opts.RetryMax}
	var err error
	for attempt := range r.opts.FetchAttempts {
		if attempt > 0 {
			t := time.NewTimer(policy.Delay(attempt - 1))
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		var final bool
		if final, err = try(); err == nil || final || ctx.Err() != nil {
			return err
		}
		r.log.Warn("reconcile: fetching failed; trying again", "what", what, "attempt", attempt+1, "of", r.opts.FetchAttempts, "err", err)
	}
	return fmt.Errorf("%w (after %d tries)", err, r.opts.FetchAttempts)
}

// fetchPackage installs a function app's package unless it is installed.
func (r *Reconciler) fetchPackage(ctx context.Context, a app.Assignment) error {
	name, version := a.App.Name, a.Version.Version
	art := a.Version.Function.Package
	if digest, err := r.opts.Packages.Digest(name, version); err == nil {
		if digest == art.SHA256 {
			// Installed before: its files must still be what was installed.
			if err := r.opts.Packages.Verify(name, version); err != nil {
				return fail(name, app.CodeInstall, err)
			}
			return nil
		}
		return fail(name, app.CodeChecksum, fmt.Errorf("version %s is installed from an archive of digest %s, the deployment says %s: a published version does not change", version, digest, art.SHA256))
	}
	pkg := codepkg.Package{Name: name, Version: version, SHA256: art.SHA256, Size: art.Size, Signature: art.Signature}
	if st := a.Version.Function.Settings; st != nil {
		m := st.Manifest(name, version)
		pkg.Manifest = &m
	}
	u, _ := url.Parse(art.URL) // checked by app
	var spool string
	err := r.retry(ctx, art.URL, func() (bool, error) {
		var src io.Reader
		if u.Scheme == "file" {
			f, err := os.Open(u.Path)
			if err != nil {
				return true, fmt.Errorf("opening %s: %w", u.Path, err)
			}
			defer f.Close()
			src = f
		} else {
			spool = filepath.Join(r.opts.Dir, "downloads", art.SHA256+".part")
			if err := r.download(ctx, name, art, spool); err != nil {
				if errors.Is(err, errOversize) {
					_ = os.Remove(spool)
					return true, err
				}
				return false, err
			}
			f, err := os.Open(spool)
			if err != nil {
				return false, err
			}
			defer f.Close()
			src = f
		}
		r.setApp(name, func(st *app.AppStatus) { st.Phase = app.PhaseInstalling })
		_, err := r.opts.Packages.Install(ctx, src, pkg)
		if errors.Is(err, codepkg.ErrChecksum) && spool != "" {
			_ = os.Remove(spool) // what came is not what was published: fetch it whole again
			return false, err
		}
		return true, err
	})
	if spool != "" && err == nil {
		_ = os.Remove(spool)
	}
	if err != nil {
		return fail(name, packageCode(err), fmt.Errorf("package %s: %w", art.URL, err))
	}
	if err := r.opts.State.PutInstalled(state.Installed{App: name, Kind: app.KindFunction, Version: version, SHA256: art.SHA256, At: time.Now().UTC()}); err != nil {
		r.log.Warn("reconcile: recording an installed version", "app", name, "err", err)
	}
	return nil
}

// packageCode classifies an install's failure.
func packageCode(err error) string {
	switch {
	case errors.Is(err, codepkg.ErrChecksum):
		return app.CodeChecksum
	case errors.Is(err, codepkg.ErrSignature):
		return app.CodeSignature
	case errors.Is(err, errDownload), errors.Is(err, context.DeadlineExceeded):
		return app.CodeDownload
	}
	return app.CodeInstall
}

// errDownload marks a transfer that failed; errOversize one that brought
// more than the artifact's size: not what was published, and no retry
// makes it so.
var (
	errDownload = errors.New("download failed")
	errOversize = fmt.Errorf("%w: too long", codepkg.ErrChecksum)
)

// download fetches art into path, resuming a partial file with a Range
// request. A try that receives no byte for StallTimeout ends.
func (r *Reconciler) download(ctx context.Context, appName string, art app.Artifact, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if art.Size > 0 && have >= art.Size {
		return nil // complete: the digest decides
	}
	tctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(tctx, http.MethodGet, art.URL, nil)
	if err != nil {
		return err
	}
	if have > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(have, 10)+"-")
	}
	resp, err := r.opts.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w", errDownload, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0 && strings.HasPrefix(resp.Header.Get("Content-Range"), "bytes "+strconv.FormatInt(have, 10)+"-"):
	case resp.StatusCode == http.StatusOK:
		if err := f.Truncate(0); err != nil {
			return err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		have = 0
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && have > 0:
		return nil // nothing past what we have: the digest decides
	default:
		return fmt.Errorf("%w: %s answered %s", errDownload, art.URL, resp.Status)
	}
	// The stall timer is pushed back by every read that brings bytes.
	stall := time.AfterFunc(r.opts.StallTimeout, func() {
		cancel(fmt.Errorf("%w: no byte for %v", errDownload, r.opts.StallTimeout))
	})
	defer stall.Stop()
	total := art.Size
	if total == 0 && resp.ContentLength > 0 {
		total = have + resp.ContentLength
	}
	buf := make([]byte, 64<<10)
	lastReport := time.Time{}
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			stall.Reset(r.opts.StallTimeout)
			if _, err := f.Write(buf[:n]); err != nil {
				return err
			}
			have += int64(n)
			if art.Size > 0 && have > art.Size {
				return fmt.Errorf("%w: %s sent more than the %d bytes the deployment says", errOversize, art.URL, art.Size)
			}
			if time.Since(lastReport) > 250*time.Millisecond {
				lastReport = time.Now()
				r.progress(appName, have, total)
			}
		}
		if errors.Is(rerr, io.EOF) {
			r.progress(appName, have, total)
			return nil
		}
		if rerr != nil {
			if cause := context.Cause(tctx); cause != nil && ctx.Err() == nil {
				return cause
			}
			return fmt.Errorf("%w: %w", errDownload, rerr)
		}
	}
}

// pullImage makes a container app's image present.
func (r *Reconciler) pullImage(ctx context.Context, a app.Assignment) error {
	ref := a.Version.Container.Image
	r.setApp(a.App.Name, func(st *app.AppStatus) { st.Phase = app.PhaseDownloading })
	err := r.retry(ctx, ref, func() (bool, error) { return false, r.opts.Containers.Pull(ctx, ref, r.opts.Pull) })
	if errors.Is(err, container.ErrUnavailable) {
		return fail(a.App.Name, app.CodeRuntimeDown, fmt.Errorf("image %s: %w", ref, err))
	}
	if err != nil {
		return fail(a.App.Name, app.CodeDownload, fmt.Errorf("image %s: %w", ref, err))
	}
	if err := r.opts.State.PutInstalled(state.Installed{App: a.App.Name, Kind: app.KindContainer, Version: a.Version.Version, Image: ref, At: time.Now().UTC()}); err != nil {
		r.log.Warn("reconcile: recording an installed version", "app", a.App.Name, "err", err)
	}
	return nil
}
