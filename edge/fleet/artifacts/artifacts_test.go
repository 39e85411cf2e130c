package artifacts_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/edgekit/edgekit/edge/fleet/artifacts"
)

const token = "the-operator-s-token"

func TestServer(t *testing.T) {
	oldPub, oldKey, _ := ed25519.GenerateKey(nil)
	newPub, newKey, _ := ed25519.GenerateKey(nil)
	_, strange, _ := ed25519.GenerateKey(nil)
	s, err := artifacts.Open(t.TempDir(), &artifacts.Options{Token: token, Keys: []ed25519.PublicKey{oldPub, newPub}, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	h, err := s.Handler()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	do := func(method, path string, body []byte, hdr map[string]string) (*http.Response, []byte) {
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	auth := map[string]string{"Authorization": "Bearer " + token}
	pkg := bytes.Repeat([]byte("package bytes "), 1000)
	sum := sha256.Sum256(pkg)
	digest := hex.EncodeToString(sum[:])

	if resp, _ := do("PUT", "/v1/blobs", pkg, nil); resp.StatusCode != 401 {
		t.Fatalf("an upload without the token: %d", resp.StatusCode)
	}
	if resp, b := do("PUT", "/v1/blobs?sha256="+strings.Repeat("0", 64), pkg, auth); resp.StatusCode != 400 || !strings.Contains(string(b), "SHA-256 is "+digest) {
		t.Fatalf("an upload of other bytes than its digest: %d %s", resp.StatusCode, b)
	}
	if resp, b := do("PUT", "/v1/blobs", bytes.Repeat([]byte("x"), 1<<20+1), auth); resp.StatusCode != 413 {
		t.Fatalf("an upload over the limit: %d %s", resp.StatusCode, b)
	}
	resp, b := do("PUT", "/v1/blobs?sha256="+digest, pkg, auth)
	var blob artifacts.Blob
	if resp.StatusCode != 201 || json.Unmarshal(b, &blob) != nil || blob.SHA256 != digest || blob.Size != int64(len(pkg)) {
		t.Fatalf("upload: %d %s", resp.StatusCode, b)
	}

	// Fetching: whole, resumed from an offset, and not again when the
	// client has it.
	resp, b = do("GET", "/blobs/sha256/"+digest, nil, nil)
	if resp.StatusCode != 200 || !bytes.Equal(b, pkg) || resp.Header.Get("ETag") != `"sha256:`+digest+`"` {
		t.Fatalf("fetch: %d, %d bytes, ETag %q", resp.StatusCode, len(b), resp.Header.Get("ETag"))
	}
	resp, b = do("GET", "/blobs/sha256/"+digest, nil, map[string]string{"Range": "bytes=5000-"})
	if resp.StatusCode != 206 || !bytes.Equal(b, pkg[5000:]) || !strings.HasPrefix(resp.Header.Get("Content-Range"), "bytes 5000-") {
		t.Fatalf("a resumed fetch: %d, %d bytes, %q", resp.StatusCode, len(b), resp.Header.Get("Content-Range"))
	}
	if resp, _ = do("GET", "/blobs/sha256/"+digest, nil, map[string]string{"If-None-Match": `"sha256:` + digest + `"`}); resp.StatusCode != 304 {
		t.Fatalf("a fetch of what the client has: %d", resp.StatusCode)
	}
	for _, bad := range []string{strings.Repeat("0", 64), "..%2f..%2fetc%2fpasswd", "ABC"} {
		if resp, _ = do("GET", "/blobs/sha256/"+bad, nil, nil); resp.StatusCode != 404 && resp.StatusCode != 400 {
			t.Errorf("fetch of %q: %d", bad, resp.StatusCode)
		}
	}

	// Manifests: signed by the old key or the new one; not by another.
	m := artifacts.Manifest{App: "alarm", Version: "1", SHA256: digest, Size: int64(len(pkg)), Signatures: [][]byte{ed25519.Sign(strange, sum[:])}}
	body, _ := json.Marshal(m)
	if resp, b = do("PUT", "/v1/manifests/alarm/1", body, auth); resp.StatusCode != 400 || !strings.Contains(string(b), "no signature verifies") {
		t.Fatalf("a manifest signed by an unknown key: %d %s", resp.StatusCode, b)
	}
	for _, key := range []ed25519.PrivateKey{oldKey, newKey} {
		m.Signatures = [][]byte{ed25519.Sign(key, sum[:])}
		body, _ = json.Marshal(m)
		if resp, b = do("PUT", "/v1/manifests/alarm/1", body, auth); resp.StatusCode != 200 {
			t.Fatalf("a manifest signed by a known key: %d %s", resp.StatusCode, b)
		}
	}
	other := m
	other.SHA256, other.Size = strings.Repeat("1", 64), 3
	body, _ = json.Marshal(other)
	if resp, _ = do("PUT", "/v1/manifests/alarm/1", body, auth); resp.StatusCode != 404 {
		t.Fatalf("a manifest of a blob not stored: %d", resp.StatusCode)
	}
	resp, b = do("GET", "/v1/manifests/alarm/1", nil, nil)
	var got artifacts.Manifest
	if resp.StatusCode != 200 || json.Unmarshal(b, &got) != nil || got.SHA256 != digest {
		t.Fatalf("manifest: %d %s", resp.StatusCode, b)
	}
	art := got.Artifact(srv.URL)
	if art.URL != srv.URL+"/blobs/sha256/"+digest || !ed25519.Verify(newPub, sum[:], art.Signature) {
		t.Fatalf("the artifact a deployment names: %+v", art)
	}
}
