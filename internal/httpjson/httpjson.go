// Package httpjson is what edgekit's HTTP APIs share: JSON answers,
// errors as {"error", "error_type"}, strict bounded request bodies, and
// the operator's bearer token checked in constant time. The gateway's
// local API, its function caller, the fleet's API and the artifact server
// all answer the same way through it.
package httpjson

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Write answers v as JSON with status.
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Error answers err as {"error": …, "error_type": typ} with status.
func Error(w http.ResponseWriter, status int, typ string, err error) {
	Write(w, status, map[string]string{"error": err.Error(), "error_type": typ})
}

// Decode reads the request's body into v: at most max bytes of one JSON
// value, no field v does not have, nothing after it. It answers a body
// that breaks a rule (400, or 413 over max) and reports false.
func Decode(w http.ResponseWriter, r *http.Request, max int64, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, max))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, extra := dec.Token(); !errors.Is(extra, io.EOF) {
			err = errors.New("data after the JSON value")
		}
	}
	if err == nil {
		return true
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		Error(w, http.StatusRequestEntityTooLarge, "BadRequest", fmt.Errorf("body: over the limit of %d bytes", max))
	} else {
		Error(w, http.StatusBadRequest, "BadRequest", fmt.Errorf("body: %w", err))
	}
	return false
}

// BearerHeader is the Authorization header that carries token, for
// Bearer (made once, not per request).
func BearerHeader(token string) []byte { return []byte("Bearer " + token) }

// Bearer reports whether r's Authorization header is want (a
// BearerHeader), compared in constant time.
func Bearer(r *http.Request, want []byte) bool {
	return subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) == 1
}

// Unauthorized answers a request without a valid token: 401, the body
// left unread, and the connection closed (the server would otherwise
// read the body to reuse it).
func Unauthorized(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	Error(w, http.StatusUnauthorized, "Unauthorized", errors.New("a bearer token is required in the Authorization header"))
}

// RequireBearer wraps next: requests without token get Unauthorized.
func RequireBearer(token string, next http.HandlerFunc) http.HandlerFunc {
	want := BearerHeader(token)
	return func(w http.ResponseWriter, r *http.Request) {
		if !Bearer(r, want) {
			Unauthorized(w)
			return
		}
		next(w, r)
	}
}
