package httpcall

import (
	"crypto/sha256"
	"sync"
)

// Tokens holds the bearer tokens of the endpoint's callers other than the
// operator: one per function, made when the function is deployed (Issue)
// and ended when it goes (Revoke), so a function calls with a token of its
// own, never the operator's, and the caller of each call is known (the
// request's Source says "caller"). A Tokens is safe for concurrent use.
type Tokens struct {
	mu     sync.RWMutex
	byHash map[[sha256.Size]byte]string // token's hash → caller
	byName map[string]string            // caller → token
}

// NewTokens returns an empty set.
func NewTokens() *Tokens {
	return &Tokens{byHash: make(map[[sha256.Size]byte]string), byName: make(map[string]string)}
}

// Issue returns name's token, making one the first time.
func (t *Tokens) Issue(name string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tok, ok := t.byName[name]; ok {
		return tok
	}
	tok := NewToken()
	t.byName[name] = tok
	t.byHash[sha256.Sum256([]byte(tok))] = name
	return tok
}

// Revoke ends name's token: requests carrying it are refused from now on.
// A later Issue makes a new one.
func (t *Tokens) Revoke(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tok, ok := t.byName[name]; ok {
		delete(t.byHash, sha256.Sum256([]byte(tok)))
		delete(t.byName, name)
	}
}

// caller reports whose token tok is. The lookup is by the token's hash,
// so its time does not depend on how much of a guess is right.
func (t *Tokens) caller(tok string) (string, bool) {
	if t == nil {
		return "", false
	}
	h := sha256.Sum256([]byte(tok))
	t.mu.RLock()
	defer t.mu.RUnlock()
	name, ok := t.byHash[h]
	return name, ok
}
