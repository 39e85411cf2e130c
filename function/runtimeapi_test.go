package function

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgekit/edgekit/invoke"
)

func TestRuntimeAPIRefusesWhatIsNotCurrent(t *testing.T) {
	api := newRuntimeAPI(profiles[APILambda], "f", "1")
	srv := httptest.NewServer(api)
	defer srv.Close()
	// The /next long poll left open below ends with this context; closing
	// its connection instead lets the client retry the GET on a new one,
	// which httptest's Close then waits for.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base := srv.URL + "/2018-06-01/runtime/invocation/"

	c := &call{id: "req-1", req: invoke.Request{Payload: []byte(`{"a":1}`)}, deadline: time.Now().Add(time.Minute), result: make(chan callResult, 1)}
	go func() { api.calls <- c }()
	resp, err := http.Get(base + "next")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Lambda-Runtime-Aws-Request-Id") != "req-1" || string(body) != `{"a":1}` || resp.Header.Get("Lambda-Runtime-Deadline-Ms") == "" {
		t.Fatalf("/next: %v %q", resp.Header, body)
	}

	// An unknown request id is refused with 400 and does not complete the
	// current invocation.
	resp, _ = http.Post(base+"other/response", "application/json", strings.NewReader(`{}`))
	var e map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || e["errorType"] != "InvalidRequestID" {
		t.Errorf("response for an unknown id: %d %v", resp.StatusCode, e)
	}
	select {
	case r := <-c.result:
		t.Fatalf("the current invocation completed: %+v", r)
	default:
	}

	// A /next without an answer fails the current invocation.
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"next", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	r := <-c.result
	var fe *invoke.Error
	if !errors.As(r.err, &fe) || fe.Type != "Runtime.NoResponse" {
		t.Errorf("unanswered invocation: %v", r.err)
	}

	// Wrong paths and methods get 404.
	resp, _ = http.Get(srv.URL + "/2018-06-01/runtime/invocation/x/response")
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET on a POST endpoint: %d", resp.StatusCode)
	}
}

// FuzzSpecJSON: a manifest's spec, parsed and checked, never panics; a
// spec that passes survives a round trip unchanged.
func FuzzSpecJSON(f *testing.F) {
	f.Add([]byte(`{"name":"f","version":"1","runtime":"go","handler":"h"}`))
	f.Add([]byte(`{"name":"f","version":"1","runtime":"executable","handler":"bootstrap","codeDir":"/x","api":"fc","mode":"continuous","minInstances":2,"timeout":"3s","config":{"a":[1,2]}}`))
	f.Add([]byte(`{"name":"../x","version":"","runtime":"nodejs","timeout":"-1s"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s Spec
		if err := json.Unmarshal(b, &s); err != nil {
			return
		}
		v, err := s.withDefaults()
		if err != nil {
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("error %v does not wrap ErrInvalidSpec", err)
			}
			return
		}
		out, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var back Spec
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("re-reading %s: %v", out, err)
		}
		again, err := back.withDefaults()
		if err != nil {
			t.Fatalf("a valid spec became invalid after a round trip: %v (%s)", err, out)
		}
		a, _ := json.Marshal(again)
		if string(a) != string(out) {
			t.Fatalf("round trip changed the spec:\n%s\n%s", out, a)
		}
	})
}
