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
// Unpacking goes through an os.Root, so the kernel keeps every write inside
// the package directory, and refuses, naming the entry: absolute paths,
// paths that climb out of the package ("../"), symbolic links whose target
// is absolute or leads outside (followed through the archive's other links,
// those made after it too), entries written through a link, hard links,
// devices, FIFOs and sockets, duplicate names, names the store keeps for
// itself (.sha256), and archives over the size or entry bounds (compression
// bombs; the directories entries imply count as entries). File modes keep
// only "executable or not".
//
// The manifest must be a regular file, not a link. Its spec is checked
// against what a package may ask of the host: a handler inside the code
// directory (relative, no ".."), no user or group 0, and no environment
// variable that makes the loader or an interpreter run other code (LD_*,
// NODE_OPTIONS, PYTHONPATH, ...) unless Options.AllowEnv names it.
//
// Packages are stored as <dir>/<name>/<version>/. An install unpacks into a
// temporary directory and renames it into place, so a version directory is
// either complete or absent; Open removes what an install killed midway
// left. Versions are immutable: installing a name/version again with the
// same content is a no-op, with different content an error. A Store is
// safe for concurrent use; one Store at a time may use a directory.
package codepkg

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

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
	// AllowEnv names environment variables a manifest may set although
	// they change how programs load (see injectionEnv).
	AllowEnv []string
}

// digestName is the file beside a version's code that holds its archive's
// SHA-256.
const digestName = ".sha256"

// tempPrefix starts the name of an install's temporary directory.
const tempPrefix = ".unpack-"

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
	// An install killed midway leaves its temporary directory.
	stale, _ := filepath.Glob(filepath.Join(dir, tempPrefix+"*"))
	for _, d := range stale {
		if err := os.RemoveAll(d); err != nil {
			return nil, fmt.Errorf("codepkg: removing %s, left by an install that did not finish: %w", d, err)
		}
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

	tmp, err := os.MkdirTemp(s.dir, tempPrefix)
	if err != nil {
		return function.Spec{}, fmt.Errorf("codepkg: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil { // MkdirTemp makes it 0700
		return function.Spec{}, fmt.Errorf("codepkg: %w", err)
	}
	u, err := unpack(p.Archive, tmp, limits{maxBytes: s.opts.MaxBytes, maxFiles: s.opts.MaxFiles})
	if err != nil {
		return function.Spec{}, fmt.Errorf("codepkg: %w", err)
	}
	defer u.close()
	spec, err := readManifest(u)
	if err != nil {
		return function.Spec{}, err
	}
	if err := s.checkManifest(spec); err != nil {
		return function.Spec{}, err
	}
	final := filepath.Join(s.dir, spec.Name, spec.Version)
	spec.CodeDir = final
	if spec, err = spec.Resolve(); err != nil {
		return function.Spec{}, fmt.Errorf("codepkg: %w: %w", ErrManifest, err)
	}
	digest := hex.EncodeToString(sum[:])
	if err := writeNew(u.root, digestName, digest); err != nil {
		return function.Spec{}, fmt.Errorf("codepkg: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if old, err := installedDigest(final); err == nil {
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

// writeNew writes a file that must not exist yet, through no link.
func writeNew(root *os.Root, name, content string) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// installedDigest reads an installed version's digest file.
func installedDigest(dir string) ([]byte, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return readRegular(root, digestName, 128)
}

// maxManifest bounds function.json.
const maxManifest = 1 << 20

func readManifest(u *unpacker) (function.Spec, error) {
	b, err := readRegular(u.root, ManifestName, maxManifest)
	if errors.Is(err, fs.ErrNotExist) {
		return function.Spec{}, fmt.Errorf("codepkg: %w: %s not found at the package root", ErrManifest, ManifestName)
	}
	if err != nil {
		return function.Spec{}, fmt.Errorf("codepkg: %w: %v", ErrManifest, err)
	}
	var spec function.Spec
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		return function.Spec{}, fmt.Errorf("codepkg: %w: %s: %v", ErrManifest, ManifestName, err)
	}
	return spec, nil
}

// injectionEnv reports whether an environment variable makes the dynamic
// loader or an interpreter load code other than the package's own.
func injectionEnv(k string) bool {
	if strings.HasPrefix(k, "LD_") || strings.HasPrefix(k, "DYLD_") {
		return true
	}
	switch k {
	case "NODE_OPTIONS", "NODE_PATH", "NODE_REPL_EXTERNAL_MODULE",
		"PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONEXECUTABLE", "PYTHONWARNINGS",
		"PERL5OPT", "PERL5LIB", "RUBYOPT", "BASH_ENV", "ENV", "SHELLOPTS", "GCONV_PATH", "LOCPATH", "HOSTALIASES",
		"GODEBUG", "GOTRACEBACK":
		return true
	}
	return false
}

// checkManifest refuses what a package may not ask of the host.
func (s *Store) checkManifest(spec function.Spec) error {
	bad := func(field, format string, a ...any) error {
		return fmt.Errorf("codepkg: %w: %s: %s", ErrManifest, field, fmt.Sprintf(format, a...))
	}
	h := strings.ReplaceAll(spec.Handler, `\`, "/")
	if strings.HasPrefix(h, "/") || (len(h) > 1 && h[1] == ':') {
		return bad("handler", "%q is absolute; a package's handler is inside its code directory", spec.Handler)
	}
	if slices.Contains(strings.Split(h, "/"), "..") {
		return bad("handler", "%q climbs out of the code directory", spec.Handler)
	}
	if spec.CodeDir != "" {
		return bad("codeDir", "set by the store, not by the package")
	}
	if u := spec.User; u != nil && (u.UID == 0 || u.GID == 0) {
		return bad("user", "uid %d gid %d: a package may not run as root", u.UID, u.GID)
	}
	for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
		if injectionEnv(k) && !slices.Contains(s.opts.AllowEnv, k) {
			return bad("env."+k, "changes which code programs load; the store allows it only when Options.AllowEnv names it")
		}
	}
	return nil
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
