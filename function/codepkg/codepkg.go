// Package codepkg installs function code packages: a versioned archive
// (gzip-compressed tar or zip) holding a manifest, function.json (a
// spec.Function), beside the code. It is for gateway firmware and the
// deployment reconciler: Install reads an archive from a stream (a download,
// a file), verifies, unpacks and stores it and returns the Spec to hand to
// function.Host.Deploy; Get and List read installed versions back after a
// reboot, without the archives; Hold keeps a version a deployment uses (or
// may roll back to) from Remove. It builds on every OS, so that Sign runs
// where vendors sign their packages.
//
// Verification comes before anything is unpacked: the archive's SHA-256 must
// match the one the deployment names, its size the one given, and when the
// store has a public key the package must carry a valid ed25519 signature
// over that SHA-256 digest (checked before the archive is read). The
// manifest must name the version the deployment names.
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
// either complete or absent (a version is complete when its digest file is
// there); Open removes what an install killed midway left. Versions are immutable: installing a name/version again with the
// same content is a no-op, with different content an error. A Store is
// safe for concurrent use; one Store at a time may use a directory.
package codepkg

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/edgekit/edgekit/function/spec"
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
	ErrNotFound  = errors.New("package version not installed")
	ErrInUse     = errors.New("package version in use")
)

// Options bound and secure a Store. Zero values mean the defaults.
type Options struct {
	// MaxBytes bounds the archive and, apart, its unpacked size; default
	// 256 MiB.
	MaxBytes int64
	// MaxFiles bounds the number of entries; default 10,000.
	MaxFiles int
	// PublicKey, when set, makes signatures mandatory.
	PublicKey ed25519.PublicKey
	// PublicKeys are more keys a signature may verify with, so that keys
	// can be rotated (packages signed with the old key still install
	// while the new one is rolled out); any one of them and PublicKey
	// will do. Set, they make signatures mandatory too.
	PublicKeys []ed25519.PublicKey
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

	mu    sync.Mutex
	holds map[string]int // name/version → holds not released
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
	if o.PublicKey != nil {
		o.PublicKeys = append([]ed25519.PublicKey{o.PublicKey}, o.PublicKeys...)
	}
	for i, k := range o.PublicKeys {
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("codepkg: public key %d is %d bytes, want %d", i, len(k), ed25519.PublicKeySize)
		}
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
	return &Store{dir: dir, opts: o, holds: map[string]int{}}, nil
}

// Package names an archive and what vouches for it: what a deployment
// says of the code it wants.
type Package struct {
	// Name and Version are what the deployment names; the manifest must
	// say the same.
	Name, Version string
	// SHA256 is the archive's expected digest, hex-encoded.
	SHA256 string
	// Size, when above zero, is the archive's length in bytes: a reader
	// giving more or fewer is refused.
	Size int64
	// Signature is ed25519 over the 32-byte SHA-256 digest; required when
	// the store has a public key.
	Signature []byte
	// Manifest, when set, is the package's manifest, for an archive that
	// holds only code (Link IoT Edge's zips): the store writes it as the
	// package's function.json, checked as any manifest, and an archive
	// with a function.json of its own is refused.
	Manifest *spec.Function
}

// Sign returns the signature Install expects for archive.
func Sign(key ed25519.PrivateKey, archive []byte) []byte {
	sum := sha256.Sum256(archive)
	return ed25519.Sign(key, sum[:])
}

// Install reads the archive from r, verifies it against p, unpacks it and
// returns its manifest's Spec, resolved (defaults filled in) and with
// CodeDir set to the installed directory. The archive is spooled to a file
// in the store as it is read (bounded by Options.MaxBytes), so no more of
// it than a buffer is held in memory; ctx's end stops the read and the
// unpacking. A version installed already with p's digest is returned as it
// is, without reading r. On any error nothing is installed and earlier
// versions are untouched.
func (s *Store) Install(ctx context.Context, r io.Reader, p Package) (spec.Function, error) {
	want, err := s.checkPackage(p)
	if err != nil {
		return spec.Function{}, err
	}
	final := filepath.Join(s.dir, p.Name, p.Version)
	if old, err := installedDigest(final); err == nil {
		if !bytes.Equal(old, []byte(hex.EncodeToString(want))) {
			return spec.Function{}, fmt.Errorf("codepkg: %w: %s version %s (installed %s, new %x)", ErrExists, p.Name, p.Version, old, want)
		}
		return s.Get(p.Name, p.Version)
	}

	tmp, err := os.MkdirTemp(s.dir, tempPrefix)
	if err != nil {
		return spec.Function{}, fmt.Errorf("codepkg: %w", err)
	}
	defer os.RemoveAll(tmp)
	archive, err := s.spool(ctx, r, p, want, tmp)
	if err != nil {
		return spec.Function{}, err
	}
	defer archive.Close()

	tree := filepath.Join(tmp, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		return spec.Function{}, fmt.Errorf("codepkg: %w", err)
	}
	u, err := unpack(ctx, archive, tree, limits{maxBytes: s.opts.MaxBytes, maxFiles: s.opts.MaxFiles})
	if err != nil {
		return spec.Function{}, fmt.Errorf("codepkg: %s version %s: %w", p.Name, p.Version, err)
	}
	defer u.close()
	if p.Manifest != nil {
		b, err := json.Marshal(p.Manifest)
		if err != nil {
			return spec.Function{}, fmt.Errorf("codepkg: %w: %v", ErrManifest, err)
		}
		if _, err := u.root.Lstat(ManifestName); err == nil {
			return spec.Function{}, fmt.Errorf("codepkg: %w: %s version %s: the deployment gives the manifest, and the archive has a %s of its own",
				ErrManifest, p.Name, p.Version, ManifestName)
		}
		if err := writeNew(u.root, ManifestName, string(b)); err != nil {
			return spec.Function{}, fmt.Errorf("codepkg: %w", err)
		}
	}
	fn, err := s.readSpec(u.root, final)
	if err != nil {
		return spec.Function{}, err
	}
	if fn.Name != p.Name || fn.Version != p.Version {
		return spec.Function{}, fmt.Errorf("codepkg: %w: the manifest says %s version %s, the deployment %s version %s",
			ErrManifest, fn.Name, fn.Version, p.Name, p.Version)
	}
	listing, err := treeListing(u.root)
	if err != nil {
		return spec.Function{}, fmt.Errorf("codepkg: listing %s version %s: %w", p.Name, p.Version, err)
	}
	if err := writeNew(u.root, treeName, string(listing)); err != nil {
		return spec.Function{}, fmt.Errorf("codepkg: %w", err)
	}
	if err := writeNew(u.root, digestName, hex.EncodeToString(want)); err != nil {
		return spec.Function{}, fmt.Errorf("codepkg: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if old, err := installedDigest(final); err == nil { // installed meanwhile
		if !bytes.Equal(old, []byte(hex.EncodeToString(want))) {
			return spec.Function{}, fmt.Errorf("codepkg: %w: %s version %s (installed %s, new %x)", ErrExists, p.Name, p.Version, old, want)
		}
		return fn, nil
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return spec.Function{}, fmt.Errorf("codepkg: %w", err)
	}
	// What a removal cut short left (no digest) makes way.
	if err := os.RemoveAll(final); err != nil {
		return spec.Function{}, fmt.Errorf("codepkg: installing %s version %s: %w", p.Name, p.Version, err)
	}
	syncDirs(tree) // the files are synced as they are written; their entries too
	if err := os.Rename(tree, final); err != nil {
		return spec.Function{}, fmt.Errorf("codepkg: installing %s version %s: %w", p.Name, p.Version, err)
	}
	syncDir(filepath.Dir(final)) // and the rename
	return fn, nil
}

// syncDirs flushes the directory entries under root (root included) to
// disk, so that a version renamed into place is there whole after a power
// cut. It is best effort: some systems cannot sync a directory.
func syncDirs(root string) {
	_ = filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			syncDir(path)
		}
		return nil
	})
}

// syncDir flushes one directory's entries, best effort.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// checkPackage checks what a deployment says of a package and returns the
// digest it expects.
func (s *Store) checkPackage(p Package) ([]byte, error) {
	if !validComponent(p.Name) || !validComponent(p.Version) {
		return nil, fmt.Errorf("codepkg: %w: the package's name %q and version %q are required, each without slashes", ErrManifest, p.Name, p.Version)
	}
	want, err := hex.DecodeString(strings.TrimSpace(p.SHA256))
	if err != nil || len(want) != sha256.Size {
		return nil, fmt.Errorf("codepkg: %s version %s: %w: expected digest %q is not 64 hex digits", p.Name, p.Version, ErrChecksum, p.SHA256)
	}
	if p.Size > s.opts.MaxBytes {
		return nil, fmt.Errorf("codepkg: %s version %s: %w: the archive is %d bytes, more than %d", p.Name, p.Version, ErrTooLarge, p.Size, s.opts.MaxBytes)
	}
	if len(s.opts.PublicKeys) > 0 {
		// The signature is over the digest, so it is checked before a
		// byte of the archive is read.
		if len(p.Signature) == 0 {
			return nil, fmt.Errorf("codepkg: %s version %s: %w: no signature, and this store requires one", p.Name, p.Version, ErrSignature)
		}
		if !slices.ContainsFunc(s.opts.PublicKeys, func(k ed25519.PublicKey) bool { return ed25519.Verify(k, want, p.Signature) }) {
			return nil, fmt.Errorf("codepkg: %s version %s: %w: the signature does not match the digest with any of the store's %d keys", p.Name, p.Version, ErrSignature, len(s.opts.PublicKeys))
		}
	}
	return want, nil
}

// spool copies the archive from r into a file in dir, hashing it as it
// goes, and verifies its size and digest. The file is returned
// open for reading.
func (s *Store) spool(ctx context.Context, r io.Reader, p Package, want []byte, dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "archive"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("codepkg: %w", err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(ctxReader{ctx, r}, s.opts.MaxBytes+1))
	fail := func(err error) (*os.File, error) {
		f.Close()
		return nil, fmt.Errorf("codepkg: %s version %s: %w", p.Name, p.Version, err)
	}
	switch {
	case err != nil:
		return fail(fmt.Errorf("reading the archive: %w", err))
	case n > s.opts.MaxBytes:
		return fail(fmt.Errorf("%w: the archive is more than %d bytes", ErrTooLarge, s.opts.MaxBytes))
	case p.Size > 0 && n != p.Size:
		return fail(fmt.Errorf("%w: the archive is %d bytes, the deployment says %d", ErrChecksum, n, p.Size))
	}
	sum := h.Sum(nil)
	if !bytes.Equal(sum, want) {
		return fail(fmt.Errorf("%w: archive is %x, deployment says %x", ErrChecksum, sum, want))
	}
	return f, nil
}

// ctxReader ends a read when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}

// Get reads back an installed version's Spec, as Install returned it,
// from its directory: after a reboot, without the archive. It wraps
// ErrNotFound when the version is not installed.
func (s *Store) Get(name, version string) (spec.Function, error) {
	if !validComponent(name) || !validComponent(version) {
		return spec.Function{}, fmt.Errorf("codepkg: %s version %s: %w", name, version, ErrNotFound)
	}
	dir := filepath.Join(s.dir, name, version)
	if _, err := installedDigest(dir); err != nil {
		return spec.Function{}, fmt.Errorf("codepkg: %s version %s: %w", name, version, ErrNotFound)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return spec.Function{}, fmt.Errorf("codepkg: %w", err)
	}
	defer root.Close()
	fn, err := s.readSpec(root, dir)
	if err != nil {
		return spec.Function{}, err
	}
	if fn.Name != name || fn.Version != version {
		return spec.Function{}, fmt.Errorf("codepkg: %w: %s holds the manifest of %s version %s", ErrManifest, dir, fn.Name, fn.Version)
	}
	return fn, nil
}

// Digest returns the archive digest an installed version was installed
// from (hex), or an error wrapping ErrNotFound.
func (s *Store) Digest(name, version string) (string, error) {
	if !validComponent(name) || !validComponent(version) {
		return "", fmt.Errorf("codepkg: %s version %s: %w", name, version, ErrNotFound)
	}
	d, err := installedDigest(filepath.Join(s.dir, name, version))
	if err != nil {
		return "", fmt.Errorf("codepkg: %s version %s: %w", name, version, ErrNotFound)
	}
	return string(d), nil
}

// Installed is one version in the store.
type Installed struct {
	Spec   spec.Function // as Get returns it
	SHA256 string        // the archive's digest, hex-encoded
}

// List returns every installed version, by name then version. A version
// whose manifest no longer reads is left out, and its error joined to the
// one returned with the rest.
func (s *Store) List() ([]Installed, error) {
	names, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("codepkg: %w", err)
	}
	var out []Installed
	var errs []error
	for _, n := range names {
		if !n.IsDir() || strings.HasPrefix(n.Name(), tempPrefix) {
			continue
		}
		versions, err := os.ReadDir(filepath.Join(s.dir, n.Name()))
		if err != nil {
			errs = append(errs, fmt.Errorf("codepkg: %w", err))
			continue
		}
		for _, v := range versions {
			dir := filepath.Join(s.dir, n.Name(), v.Name())
			digest, err := installedDigest(dir)
			if err != nil {
				continue // not a complete version
			}
			fn, err := s.Get(n.Name(), v.Name())
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out = append(out, Installed{Spec: fn, SHA256: string(digest)})
		}
	}
	return out, errors.Join(errs...)
}

// Hold marks an installed version in use (by a deployment the gateway runs
// or may roll back to): Remove refuses it until every hold is released.
// Holds live in memory; after a restart the gateway takes them again.
func (s *Store) Hold(name, version string) (release func(), err error) {
	if _, err := s.Get(name, version); err != nil {
		return nil, err
	}
	key := name + "/" + version
	s.mu.Lock()
	s.holds[key]++
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.holds[key]--; s.holds[key] <= 0 {
				delete(s.holds, key)
			}
		})
	}, nil
}

// writeNew writes a file that must not exist yet, through no link.
func writeNew(root *os.Root, name, content string) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|noFollow, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(content)
	if err == nil {
		err = f.Sync()
	}
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

// readSpec reads the manifest at root, checks it against what a package
// may ask, and returns it resolved with CodeDir set to codeDir.
func (s *Store) readSpec(root *os.Root, codeDir string) (spec.Function, error) {
	b, err := readRegular(root, ManifestName, maxManifest)
	if errors.Is(err, fs.ErrNotExist) {
		return spec.Function{}, fmt.Errorf("codepkg: %w: %s not found at the package root", ErrManifest, ManifestName)
	}
	if err != nil {
		return spec.Function{}, fmt.Errorf("codepkg: %w: %v", ErrManifest, err)
	}
	var fn spec.Function
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fn); err != nil {
		return spec.Function{}, fmt.Errorf("codepkg: %w: %s: %v", ErrManifest, ManifestName, err)
	}
	if err := s.checkManifest(fn); err != nil {
		return spec.Function{}, err
	}
	fn.CodeDir = codeDir
	if fn, err = fn.Resolve(); err != nil {
		return spec.Function{}, fmt.Errorf("codepkg: %w: %w", ErrManifest, err)
	}
	return fn, nil
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
func (s *Store) checkManifest(spec spec.Function) error {
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

// Remove deletes an installed version. A version held (see Hold) is
// refused with ErrInUse; one not installed is no error.
func (s *Store) Remove(name, version string) error {
	if !validComponent(name) || !validComponent(version) {
		return fmt.Errorf("codepkg: remove: invalid name %q or version %q", name, version)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.holds[name+"/"+version] > 0 {
		return fmt.Errorf("codepkg: remove %s version %s: %w", name, version, ErrInUse)
	}
	// The digest goes first: a removal cut short leaves no version that
	// looks complete.
	dir := filepath.Join(s.dir, name, version)
	if err := os.Remove(filepath.Join(dir, digestName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("codepkg: remove %s version %s: %w", name, version, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("codepkg: remove %s version %s: %w", name, version, err)
	}
	return nil
}

func validComponent(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, `/\`+"\x00")
}
