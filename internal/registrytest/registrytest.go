// Package registrytest serves container images over the OCI distribution
// API (the read side: manifests and blobs) on a loopback TLS listener with
// basic authentication, so that pulls and their credentials are tested
// against a real registry protocol; no registry is reachable from the
// test machines. Its certificate is self-signed: pull with TLS
// verification off.
package registrytest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// Media types the registry serves.
const (
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar"
)

// Registry is a running registry.
type Registry struct {
	// Host is its address, host:port, for image references.
	Host string

	user, password string

	mu        sync.Mutex
	manifests map[string][]byte // "name:tag" and "name@digest"
	blobs     map[string][]byte // by digest
	denied    int               // requests refused for their credentials
}

// Start serves an empty registry until t ends. With a user, every request
// must carry it and the password (HTTP basic authentication).
func Start(t testing.TB, user, password string) *Registry {
	t.Helper()
	r := &Registry{user: user, password: password, manifests: map[string][]byte{}, blobs: map[string][]byte{}}
	srv := httptest.NewTLSServer(r)
	t.Cleanup(srv.Close)
	r.Host = strings.TrimPrefix(srv.URL, "https://")
	return r
}

// Add stores an image of one layer, the root filesystem tar rootfs, whose
// entrypoint is entrypoint, as name:tag; it returns the image's reference.
func (r *Registry) Add(name, tag string, rootfs []byte, entrypoint []string) string {
	layer := r.blob(rootfs)
	config, _ := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       map[string]any{"Entrypoint": entrypoint},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layer}},
	})
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaManifest,
		"config":        map[string]any{"mediaType": mediaConfig, "digest": r.blob(config), "size": len(config)},
		"layers":        []any{map[string]any{"mediaType": mediaLayer, "digest": layer, "size": len(rootfs)}},
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.manifests[name+":"+tag] = manifest
	r.manifests[name+"@"+digest(manifest)] = manifest
	return r.Host + "/" + name + ":" + tag
}

// Denied is how many requests were refused for their credentials.
func (r *Registry) Denied() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.denied
}

func (r *Registry) blob(data []byte) string {
	d := digest(data)
	r.mu.Lock()
	r.blobs[d] = data
	r.mu.Unlock()
	return d
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ServeHTTP answers /v2/, /v2/NAME/manifests/REF and /v2/NAME/blobs/DIGEST.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if r.user != "" {
		if u, p, ok := req.BasicAuth(); !ok || u != r.user || p != r.password {
			r.mu.Lock()
			r.denied++
			r.mu.Unlock()
			w.Header().Set("WWW-Authenticate", `Basic realm="registrytest"`)
			writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
			return
		}
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		writeError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "this registry only serves pulls")
		return
	}
	path := strings.TrimPrefix(req.URL.Path, "/v2/")
	if path == "" {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		fmt.Fprint(w, "{}")
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var body []byte
	var media string
	if name, ref, ok := strings.Cut(path, "/manifests/"); ok {
		sep := ":"
		if strings.HasPrefix(ref, "sha256:") {
			sep = "@"
		}
		body, media = r.manifests[name+sep+ref], mediaManifest
		if body == nil {
			writeError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown: "+name+sep+ref)
			return
		}
	} else if _, d, ok := strings.Cut(path, "/blobs/"); ok {
		body, media = r.blobs[d], "application/octet-stream"
		if body == nil {
			writeError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown: "+d)
			return
		}
	} else {
		writeError(w, http.StatusNotFound, "NAME_UNKNOWN", "no route for "+req.URL.Path)
		return
	}
	w.Header().Set("Content-Type", media)
	w.Header().Set("Docker-Content-Digest", digest(body))
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	if req.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []any{map[string]string{"code": code, "message": message}}})
}
