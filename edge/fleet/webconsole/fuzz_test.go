package webconsole

import (
	"strings"
	"testing"
)

// FuzzOpen: whatever a browser sends as a cookie, open never panics and
// takes only what the key sealed.
func FuzzOpen(f *testing.F) {
	k := signer{key: []byte("0123456789abcdef0123456789abcdef")}
	good := k.seal(sessionCookie, session{User: "ana", Expires: 1 << 40, Nonce: "n"})
	f.Add(good)
	f.Add("")
	f.Add(".")
	f.Add("eyJ1IjoiYWRtaW4ifQ.AAAA")
	f.Add(strings.Repeat("A", 5000) + "." + strings.Repeat("B", 43))
	f.Fuzz(func(t *testing.T, v string) {
		var s session
		err := k.open(sessionCookie, v, &s)
		if err == nil && v != good {
			// Another string that opens must be the same payload and MAC
			// in another base64 spelling, which RawURLEncoding refuses.
			t.Fatalf("%q opened as %+v", v, s)
		}
		if k.checkCSRF("session", v, v) {
			t.Fatalf("a CSRF token equal to its nonce %q was taken", v)
		}
	})
}
