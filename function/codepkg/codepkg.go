// Package codepkg installs function code packages: a versioned archive
// (gzip-compressed tar or zip) holding a manifest, function.json (a
// function.Spec), beside the code. It is for gateway firmware and the
// deployment reconciler: Install verifies, unpacks and stores a package and
// returns the Spec to hand to function.Host.Deploy.
//
// Verification comes before anything is unpacked: the archive's SHA-256 must
// match the one the deployment names, and when the store has a public key the
// package must carry a valid ed25519 signature over that SHA-256 digest.
//
// Unpacking refuses, naming the entry: absolute paths, paths that climb out
// of the package ("../"), symbolic links whose target is absolute or points
// outside, entries written through a link, hard links, devices, FIFOs and
// sockets, duplicate names, and archives over the size or file-count bounds
// (compression bombs). File modes keep only "executable or not".
//
// Packages are stored as <dir>/<name>/<version>/. An install unpacks into a
// temporary directory and renames it into place, so a version directory is
// either complete or absent. Versions are immutable: installing a
// name/version again with the same content is a no-op, with different
// content an error. A Store is safe for concurrent use.
package codepkg

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/edgekit/edgekit/function"
)

// ManifestName is the manifest's path inside a package.
const ManifestName = "function.json"

// Sentinel errors, wrapped with the detail.
var (
	ErrChecksum  = errors.New("package checksum mismatch")
	ErrSignature = errors.New("package signature missing or invalid")
	ErrFormat    = errors.New("malformed package")
	ErrUnsafe    = errors.New("unsafe package entry")
	ErrTooLarge  = errors.New("package over its bounds")
	ErrManifest  = errors.New("invalid package manifest")
	ErrExists    = errors.New("package version already installed with different content")
)

// Options bound and secure a Store. Zero values mean the defaults.
type Options struct {
	// MaxBytes bounds the unpacked size; default 256 MiB.
	MaxBytes int64
	// MaxFiles bounds the number of entries; default 10,000.
	MaxFiles int
	// PublicKey, when set, makes signatures mandatory.
	PublicKey ed25519.PublicKey
}

// Store holds installed packages under a directory.
type Store struct {
	dir  string
	opts Options
	mu   sync.Mutex
}

// Open opens (or creates) a store in dir.
func Open(dir string, opts *Options) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 256 << 20
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = 10_000
	}
	if o.PublicKey != nil && len(o.PublicKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("codepkg: public key is %d bytes, want %d", len(o.PublicKey), ed25519.PublicKeySize)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("codepkg: %w", err)
	}
	return &Store{dir: dir, opts: o}, nil
}

// Package is an archive and what vouches for it.
type Package struct {
	Archive []byte
	// SHA256 is the expected digest, hex-encoded.
	SHA256 string
	// Signature is ed25519 over the 32-byte SHA-256 digest; required when
	// the store has a public key.
	Signature []byte
}

// Sign returns the signature Install expects for archive.
func Sign(key ed25519.PrivateKey, archive []byte) []byte {
	sum := sha256.Sum256(archive)
	return ed25519.Sign(key, sum[:])
}

// Install verifies and unpacks p and returns its manifest's Spec, resolved
// (defaults filled in) and with CodeDir set to the installed directory. On
// any error nothing is installed and earlier versions are untouched.
func (s *Store) Install(p Package) (function.Spec, error) {
	sum := sha256.Sum256(p.Archive)
	want, err := hex.DecodeString(strings.TrimSpace(p.SHA256))
	if err != nil || len(want) != sha256.Size {
		return function.Spec{}, fmt.Errorf("codepkg: %w: expected digest %q is not 64 hex digits", ErrChecksum, p.SHA256)
	}
	if !bytes.Equal(sum[:], want) {
		return function.Spec{}, fmt.Errorf("codepkg: %w: archive is %x, deployment says %x", ErrChecksum, sum, want)
	}
	if s.opts.PublicKey != nil {
		if len(p.Signature) == 0 {
			return function.Spec{}, fmt.Errorf("codepkg: %w: no signature, and this store requires one", ErrSignature)
		}
		if !ed25519.Verify(s.opts.PublicKey, sum[:], p.Signature) {
			return function.Spec{}, fmt.Errorf("codepkg: %w: the signature does not match the archive and the store's key", ErrSignature)
		}
	}

	tmp, err := os.MkdirTemp(s.dir, ".unpack-")
	if err != nil {
		return function.Spec{}, fmt.Errorf("codepkg: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := unpack(p.Archive, tmp, limits{maxBytes: s.opts.MaxBytes, maxFiles: s.opts.MaxFiles}); err != nil {
		return function.Spec{}, fmt.Errorf("codepkg: %w", err)
	}
	spec, err := readManifest(tmp)
	if err != nil {
		return function.Spec{}, err
	}
	final := filepath.Join(s.dir, spec.Name, spec.Version)
	spec.CodeDir = final
	if spec, err = spec.Resolve(); err != nil {
		return function.Spec{}, fmt.Errorf("codepkg: %w: %w", ErrManifest, err)
	}
	digest := hex.EncodeToString(sum[:])
	if err := os.WriteFile(filepath.Join(tmp, ".sha256"), []byte(digest), 0o644); err != nil {
		return function.Spec{}, fmt.Errorf("codepkg: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if old, err := os.ReadFile(filepath.Join(final, ".sha256")); err == nil {
		if string(old) == digest {
			return spec, nil
		}
		return function.Spec{}, fmt.Errorf("codepkg: %w: %s version %s (installed %s, new %s)", ErrExists, spec.Name, spec.Version, old, digest)
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return function.Spec{}, fmt.Errorf("codepkg: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return function.Spec{}, fmt.Errorf("codepkg: installing %s version %s: %w", spec.Name, spec.Version, err)
	}
	return spec, nil
}

func readManifest(root string) (function.Spec, error) {
	b, err := os.ReadFile(filepath.Join(root, ManifestName))
	if err != nil {
		return function.Spec{}, fmt.Errorf("codepkg: %w: %s not found at the package root", ErrManifest, ManifestName)
	}
	var spec function.Spec
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		return function.Spec{}, fmt.Errorf("codepkg: %w: %s: %v", ErrManifest, ManifestName, err)
	}
	return spec, nil
}

// Remove deletes an installed version; the running host should not use it
// any more.
func (s *Store) Remove(name, version string) error {
	if !validComponent(name) || !validComponent(version) {
		return fmt.Errorf("codepkg: remove: invalid name %q or version %q", name, version)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return os.RemoveAll(filepath.Join(s.dir, name, version))
}

func validComponent(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, `/\`+"\x00")
}
