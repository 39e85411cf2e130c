package fleet

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edgekit/edgekit/edge/fleet/store"
	"github.com/edgekit/edgekit/function/spec"
)

// ErrDenied: a name and password that do not sign in, or an action the
// caller's role does not allow.
var ErrDenied = errors.New("access denied")

// Role is what a console user may do.
type Role string

// Roles.
const (
	// RoleViewer reads everything and changes nothing.
	RoleViewer Role = "viewer"
	// RoleOperator also creates apps and versions, deploys, and pauses,
	// resumes, cancels and rolls back deployments.
	RoleOperator Role = "operator"
)

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r == RoleViewer || r == RoleOperator }

// User is a person who signs in to the fleet's console.
type User struct {
	Name    string    `json:"name"`
	Role    Role      `json:"role"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// userRecord is a user as stored: with the password's hash, never
// returned.
type userRecord struct {
	User
	Hash string `json:"hash"`
}

// MinPassword is the shortest password SetUser takes, in characters.
const MinPassword = 12

// passwordIter is PBKDF2-HMAC-SHA256's iteration count for new hashes
// (OWASP's 2023 advice); a hash records its own, so it can grow.
const passwordIter = 600_000

// SetUser adds a user or changes one's password and role.
func (f *Fleet) SetUser(ctx context.Context, name, password string, role Role) (User, error) {
	if !spec.ValidName(name) {
		return User{}, fmt.Errorf("%w: user name %q: want 1-64 letters, digits, '.', '_' or '-'", ErrInvalid, name)
	}
	if !role.Valid() {
		return User{}, fmt.Errorf("%w: user %s: role %q: want viewer or operator", ErrInvalid, name, role)
	}
	if n := utf8.RuneCountInString(password); n < MinPassword || len(password) > 1024 {
		return User{}, fmt.Errorf("%w: user %s: a password of %d to 1024 bytes is needed", ErrInvalid, name, MinPassword)
	}
	hash, err := hashPassword(password, passwordIter)
	if err != nil {
		return User{}, err
	}
	for {
		old, err := get[userRecord](ctx, f.st, collUsers, name)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return User{}, err
		}
		now := f.now().UTC()
		u := userRecord{User: User{Name: name, Role: role, Created: now, Updated: now}, Hash: hash}
		if old.version != 0 {
			u.Created = old.v.Created
		}
		_, err = f.st.Apply(ctx, store.Replace(collUsers, name, encode(u), old.version))
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return User{}, fmt.Errorf("fleet: user %s: %w", name, err)
		}
		return u.User, nil
	}
}

// User returns a user.
func (f *Fleet) User(ctx context.Context, name string) (User, error) {
	r, err := get[userRecord](ctx, f.st, collUsers, name)
	return r.v.User, err
}

// Users lists the users by name.
func (f *Fleet) Users(ctx context.Context) ([]User, error) {
	rs, err := list[userRecord](ctx, f.st, collUsers, "", f.bad)
	if err != nil {
		return nil, err
	}
	out := make([]User, len(rs))
	for i, r := range rs {
		out[i] = r.v.User
	}
	return out, nil
}

// dummyHash is checked against when no user has the name, so that a
// sign-in takes as long whether the name exists or not.
var dummyHash = "pbkdf2-sha256$" + strconv.Itoa(passwordIter) + "$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

// SignIn checks a user's password. A wrong name or password is ErrDenied,
// the same error for both.
func (f *Fleet) SignIn(ctx context.Context, name, password string) (User, error) {
	r, err := get[userRecord](ctx, f.st, collUsers, name)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return User{}, err
	}
	hash := r.v.Hash
	if err != nil {
		hash = dummyHash
	}
	ok, herr := checkPassword(password, hash)
	if herr != nil {
		f.log.Error("fleet: a user's password hash does not parse", "user", name, "err", herr)
	}
	if err != nil || !ok {
		return User{}, fmt.Errorf("%w: wrong user name or password", ErrDenied)
	}
	return r.v.User, nil
}

func hashPassword(password string, iter int) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key, err := pbkdf2.Key(sha256.New, password, salt, iter, 32)
	if err != nil {
		return "", fmt.Errorf("fleet: hashing a password: %w", err)
	}
	enc := base64.RawStdEncoding
	return "pbkdf2-sha256$" + strconv.Itoa(iter) + "$" + enc.EncodeToString(salt) + "$" + enc.EncodeToString(key), nil
}

func checkPassword(password, hash string) (bool, error) {
	parts := strings.Split(hash, "$")
	if len(parts) != 4 || parts[0] != "pbkdf2-sha256" {
		return false, errors.New("not a pbkdf2-sha256 hash")
	}
	iter, err := strconv.Atoi(parts[1])
	if err != nil || iter < 1 || iter > 10_000_000 {
		return false, fmt.Errorf("iterations %q", parts[1])
	}
	enc := base64.RawStdEncoding
	salt, err1 := enc.DecodeString(parts[2])
	want, err2 := enc.DecodeString(parts[3])
	if err := errors.Join(err1, err2); err != nil {
		return false, err
	}
	got, err := pbkdf2.Key(sha256.New, password, salt, iter, len(want))
	if err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// Secret returns the fleet's secret of that name: 32 random bytes made at
// the first call and kept in the store, so that every replica sharing it
// has the same (the console signs its sessions with one).
func (f *Fleet) Secret(ctx context.Context, name string) ([]byte, error) {
	for {
		r, err := f.st.Get(ctx, collSecrets, name)
		if err == nil {
			b, derr := base64.RawStdEncoding.DecodeString(strings.Trim(string(r.Value), `"`))
			if derr != nil || len(b) < 32 {
				return nil, fmt.Errorf("fleet: secret %s: %w", name, store.ErrDamaged)
			}
			return b, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("fleet: secret %s: %w", name, err)
		}
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		_, err = f.st.Apply(ctx, store.Create(collSecrets, name, encode(base64.RawStdEncoding.EncodeToString(b))))
		if err == nil {
			return b, nil
		}
		if !errors.Is(err, store.ErrConflict) { // another replica made it first: read it
			return nil, fmt.Errorf("fleet: secret %s: %w", name, err)
		}
	}
}
