package webconsole

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/edgekit/edgekit/edge/fleet"
)

// Cookie names.
const (
	sessionCookie = "edgekit_session"
	signinCookie  = "edgekit_signin" // the sign-in form's CSRF seed, before a session
	flashCookie   = "edgekit_flash"
)

// session is what the session cookie carries, signed with the console's
// key: who signed in, how, until when, and the nonce its CSRF token is
// made from.
type session struct {
	User    string     `json:"u"`
	Token   bool       `json:"t,omitempty"` // signed in with the API token (an operator)
	TokenID string     `json:"k,omitempty"` // which token: a rotated token ends its sessions
	Expires int64      `json:"e"`
	Nonce   string     `json:"n"`
	Role    fleet.Role `json:"-"` // the user's role now, from the store
}

// actor is the name the audit log gives the session's holder.
func (s *session) actor() string {
	if s.Token {
		return "token"
	}
	return s.User
}

// signer makes and checks the console's cookies and CSRF tokens with one
// key.
type signer struct{ key []byte }

func (k signer) mac(parts ...string) []byte {
	m := hmac.New(sha256.New, k.key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return m.Sum(nil)
}

var b64 = base64.RawURLEncoding.Strict() // one spelling per value: a sealed value cannot be respelt

// seal returns v as JSON with its MAC, for a cookie named purpose.
func (k signer) seal(purpose string, v any) string {
	b, _ := json.Marshal(v)
	p := b64.EncodeToString(b)
	return p + "." + b64.EncodeToString(k.mac(purpose, p))
}

// open checks a sealed value and decodes it into v.
func (k signer) open(purpose, sealed string, v any) error {
	p, sig, ok := strings.Cut(sealed, ".")
	if !ok {
		return errors.New("not a sealed value")
	}
	want, err := b64.DecodeString(sig)
	if err != nil || !hmac.Equal(want, k.mac(purpose, p)) {
		return errors.New("its signature does not verify")
	}
	b, err := b64.DecodeString(p)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// csrf is the CSRF token of a nonce (a session's, or the sign-in form's).
func (k signer) csrf(purpose, nonce string) string {
	return b64.EncodeToString(k.mac("csrf", purpose, nonce))
}

// checkCSRF compares a form's token with the one nonce makes.
func (k signer) checkCSRF(purpose, nonce, got string) bool {
	return nonce != "" && subtle.ConstantTimeCompare([]byte(k.csrf(purpose, nonce)), []byte(got)) == 1
}

func randomNonce() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return b64.EncodeToString(b)
}

// tokenID names a token without telling it.
func tokenID(token string) string {
	h := sha256.Sum256([]byte("edgekit-console-token\x00" + token))
	return b64.EncodeToString(h[:9])
}

// cookie is a console cookie with the flags every one carries: HttpOnly,
// SameSite=Strict, Path /ui/, Secure on TLS.
func (c *Console) cookie(r *http.Request, name, value string, maxAge time.Duration) *http.Cookie {
	ck := &http.Cookie{Name: name, Value: value, Path: Prefix + "/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: r.TLS != nil || c.opts.Secure}
	if maxAge < 0 {
		ck.MaxAge = -1
	} else {
		ck.MaxAge = int(maxAge / time.Second)
	}
	return ck
}
