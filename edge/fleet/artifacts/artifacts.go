// Package artifacts is the fleet's artifact server: function packages
// stored by their SHA-256 in a directory and served over HTTP with Range
// requests (a gateway resumes a broken download where it stopped), strong
// ETags and immutable caching; and a signed manifest per app version
// (the package's digest and size, with ed25519 signatures over the digest
// by one or more keys, so that keys can be rotated: a gateway holding
// either key verifies). Gateways need no token to fetch (what they fetch
// is named by its digest and its signature is checked); uploads take the
// operator's.
//
// Routes: PUT /v1/blobs (upload; ?sha256= to have it checked), GET
// /blobs/sha256/{digest}, PUT and GET /v1/manifests/{app}/{version}.
package artifacts

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/function/spec"
	"github.com/edgekit/edgekit/internal/httpjson"
)

// Sentinel errors.
var (
	ErrNotFound  = errors.New("artifact not found")
	ErrDigest    = errors.New("digest mismatch")
	ErrSignature = errors.New("signature invalid")
	ErrInvalid   = errors.New("invalid artifact request")
	ErrTooLarge  = errors.New("artifact too large")
)

// Options configure a Server.
type Options struct {
	// Token is the operator's, for uploads; required for Handler.
	Token string
	// Keys verify the manifests' signatures; a manifest needs one
	// signature that one of them verifies. None: manifests are taken
	// unsigned.
	Keys []ed25519.PublicKey
	// MaxBytes bounds an upload; default 256 MiB.
	MaxBytes int64
}

// Server stores and serves artifacts under a directory.
type Server struct {
	dir  string
	opts Options
}

// Blob is a stored artifact.
type Blob struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Manifest is an app version's package: its digest and size, and
// signatures over the 32-byte digest.
type Manifest struct {
	App        string   `json:"app"`
	Version    string   `json:"version"`
	SHA256     string   `json:"sha256"`
	Size       int64    `json:"size"`
	Signatures [][]byte `json:"signatures,omitempty"`
}

var digestRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Open opens (or creates) a server's store in dir.
func Open(dir string, opts *Options) (*Server, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 256 << 20
	}
	for i, k := range o.Keys {
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("artifacts: %w: key %d is %d bytes", ErrInvalid, i, len(k))
		}
	}
	for _, d := range []string{"blobs", "manifests", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("artifacts: %w", err)
		}
	}
	return &Server{dir: dir, opts: o}, nil
}

func (s *Server) blobPath(digest string) string { return filepath.Join(s.dir, "blobs", digest) }

// Put stores what r holds; want, when not empty, is the digest it must
// have. Storing a blob again is no error.
func (s *Server) Put(ctx context.Context, r io.Reader, want string) (Blob, error) {
	if want != "" && !digestRE.MatchString(want) {
		return Blob{}, fmt.Errorf("artifacts: %w: digest %q: want 64 lowercase hex digits", ErrInvalid, want)
	}
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "upload-")
	if err != nil {
		return Blob{}, fmt.Errorf("artifacts: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, s.opts.MaxBytes+1))
	if err != nil {
		return Blob{}, fmt.Errorf("artifacts: upload: %w", err)
	}
	if n > s.opts.MaxBytes {
		return Blob{}, fmt.Errorf("artifacts: %w: over %d bytes", ErrTooLarge, s.opts.MaxBytes)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if want != "" && got != want {
		return Blob{}, fmt.Errorf("artifacts: %w: the upload's SHA-256 is %s, not %s", ErrDigest, got, want)
	}
	if err := tmp.Sync(); err != nil {
		return Blob{}, fmt.Errorf("artifacts: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.blobPath(got)); err != nil {
		return Blob{}, fmt.Errorf("artifacts: %w", err)
	}
	return Blob{SHA256: got, Size: n}, nil
}

// Stat returns a stored blob's size, or ErrNotFound.
func (s *Server) Stat(digest string) (Blob, error) {
	if !digestRE.MatchString(digest) {
		return Blob{}, fmt.Errorf("artifacts: %w: digest %q", ErrInvalid, digest)
	}
	fi, err := os.Stat(s.blobPath(digest))
	if err != nil {
		return Blob{}, fmt.Errorf("artifacts: blob %s: %w", digest, ErrNotFound)
	}
	return Blob{SHA256: digest, Size: fi.Size()}, nil
}

// PutManifest records an app version's manifest: its blob must be
// stored with that size, and with keys configured one signature must
// verify. A manifest written again replaces the one before only when it
// names the same blob (a version is immutable; its signatures may grow).
func (s *Server) PutManifest(m Manifest) error {
	if !spec.ValidName(m.App) || !spec.ValidVersion(m.Version) {
		return fmt.Errorf("artifacts: %w: app %q version %q", ErrInvalid, m.App, m.Version)
	}
	b, err := s.Stat(m.SHA256)
	if err != nil {
		return err
	}
	if b.Size != m.Size {
		return fmt.Errorf("artifacts: %s %s: %w: the blob is %d bytes, the manifest says %d", m.App, m.Version, ErrDigest, b.Size, m.Size)
	}
	if len(s.opts.Keys) > 0 && !s.verified(m) {
		return fmt.Errorf("artifacts: %s %s: %w: no signature verifies with the server's %d keys", m.App, m.Version, ErrSignature, len(s.opts.Keys))
	}
	if old, err := s.Manifest(m.App, m.Version); err == nil && old.SHA256 != m.SHA256 {
		return fmt.Errorf("artifacts: %s %s: %w: the version has package %s already (versions are immutable)", m.App, m.Version, ErrInvalid, old.SHA256)
	}
	path := filepath.Join(s.dir, "manifests", m.App, m.Version+".json")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("artifacts: %w", err)
	}
	data, _ := json.Marshal(m)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("artifacts: %w", err)
	}
	return os.Rename(tmp, path)
}

func (s *Server) verified(m Manifest) bool {
	digest, err := hex.DecodeString(m.SHA256)
	if err != nil {
		return false
	}
	for _, sig := range m.Signatures {
		if slices.ContainsFunc(s.opts.Keys, func(k ed25519.PublicKey) bool { return ed25519.Verify(k, digest, sig) }) {
			return true
		}
	}
	return false
}

// Manifest returns an app version's manifest.
func (s *Server) Manifest(appName, version string) (Manifest, error) {
	if !spec.ValidName(appName) || !spec.ValidVersion(version) {
		return Manifest{}, fmt.Errorf("artifacts: %w: app %q version %q", ErrInvalid, appName, version)
	}
	data, err := os.ReadFile(filepath.Join(s.dir, "manifests", appName, version+".json"))
	if err != nil {
		return Manifest{}, fmt.Errorf("artifacts: %s %s: %w", appName, version, ErrNotFound)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return Manifest{}, fmt.Errorf("artifacts: %s %s: a damaged manifest: %w", appName, version, err)
	}
	return m, nil
}

// Artifact is the app.Artifact a deployment names for a manifest's
// package, served at base (the server's URL): the first signature goes
// with it.
func (m Manifest) Artifact(base string) app.Artifact {
	a := app.Artifact{URL: base + "/blobs/sha256/" + m.SHA256, Size: m.Size, SHA256: m.SHA256}
	if len(m.Signatures) > 0 {
		a.Signature = m.Signatures[0]
	}
	return a
}

// Handler serves the routes.
func (s *Server) Handler() (http.Handler, error) {
	if len(s.opts.Token) < 16 {
		return nil, fmt.Errorf("artifacts: %w: a token of at least 16 characters is required", ErrInvalid)
	}
	auth := func(next http.HandlerFunc) http.HandlerFunc { return httpjson.RequireBearer(s.opts.Token, next) }
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/blobs", auth(func(w http.ResponseWriter, r *http.Request) {
		b, err := s.Put(r.Context(), http.MaxBytesReader(w, r.Body, s.opts.MaxBytes), r.URL.Query().Get("sha256"))
		if err != nil {
			fail(w, err)
			return
		}
		httpjson.Write(w, http.StatusCreated, b)
	}))
	mux.HandleFunc("GET /blobs/sha256/{digest}", func(w http.ResponseWriter, r *http.Request) {
		digest := r.PathValue("digest")
		if _, err := s.Stat(digest); err != nil {
			fail(w, err)
			return
		}
		f, err := os.Open(s.blobPath(digest))
		if err != nil {
			fail(w, fmt.Errorf("artifacts: blob %s: %w", digest, ErrNotFound))
			return
		}
		defer f.Close()
		w.Header().Set("ETag", `"sha256:`+digest+`"`)
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "", time.Time{}, f) // Range, If-Range, If-None-Match
	})
	mux.HandleFunc("PUT /v1/manifests/{app}/{version}", auth(func(w http.ResponseWriter, r *http.Request) {
		var m Manifest
		if !httpjson.Decode(w, r, 1<<20, &m) {
			return
		}
		if m.App != r.PathValue("app") || m.Version != r.PathValue("version") {
			httpjson.Error(w, http.StatusBadRequest, "BadRequest", fmt.Errorf("the manifest names %s %s, the path %s %s", m.App, m.Version, r.PathValue("app"), r.PathValue("version")))
			return
		}
		if err := s.PutManifest(m); err != nil {
			fail(w, err)
			return
		}
		httpjson.Write(w, http.StatusOK, m)
	}))
	mux.HandleFunc("GET /v1/manifests/{app}/{version}", func(w http.ResponseWriter, r *http.Request) {
		m, err := s.Manifest(r.PathValue("app"), r.PathValue("version"))
		if err != nil {
			fail(w, err)
			return
		}
		httpjson.Write(w, http.StatusOK, m)
	})
	return mux, nil
}

func fail(w http.ResponseWriter, err error) {
	var tooBig *http.MaxBytesError
	switch {
	case errors.Is(err, ErrNotFound):
		httpjson.Error(w, http.StatusNotFound, "NotFound", err)
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrDigest), errors.Is(err, ErrSignature):
		httpjson.Error(w, http.StatusBadRequest, "BadRequest", err)
	case errors.Is(err, ErrTooLarge), errors.As(err, &tooBig):
		httpjson.Error(w, http.StatusRequestEntityTooLarge, "BadRequest", err)
	default:
		httpjson.Error(w, http.StatusInternalServerError, "Internal", err)
	}
}
