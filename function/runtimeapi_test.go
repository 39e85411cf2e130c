package function

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/invoke"
)

func TestRuntimeAPIRefusesWhatIsNotCurrent(t *testing.T) {
	api := newRuntimeAPI(profiles[APILambda], Spec{Name: "f", Version: "1"}, "s3cret", nil, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(api)
	defer srv.Close()
	// The /next long poll left open below ends with this context; closing
	// its connection instead lets the client retry the GET on a new one,
	// which httptest's Close then waits for.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base := srv.URL + "/s3cret/2018-06-01/runtime/invocation/"

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

	// A /next before the answer (fc-runtime-go-sdk's order, and what both
	// services allow) leaves the current invocation answerable; the answer
	// posted after it completes it, and the waiting /next gets the next.
	nextID := make(chan string, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"next", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			nextID <- resp.Header.Get("Lambda-Runtime-Aws-Request-Id")
			resp.Body.Close()
		}
	}()
	testenv.Eventually(t, "the second /next waiting", func() bool { return api.polling.Load() == 1 })
	resp, err = http.Post(base+"req-1/response", "application/json", strings.NewReader(`{"ok":true}`))
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("the answer after the next /next: %v %v", resp, err)
	}
	resp.Body.Close()
	if r := <-c.result; r.err != nil || string(r.resp.Payload) != `{"ok":true}` {
		t.Errorf("the invocation answered after the next /next: %+v", r)
	}
	api.calls <- &call{id: "req-2", deadline: time.Now().Add(time.Minute), result: make(chan callResult, 1)}
	if id := <-nextID; id != "req-2" {
		t.Errorf("the waiting /next got %q, want req-2", id)
	}

	// Wrong paths and methods get 404.
	resp, _ = http.Get(srv.URL + "/s3cret/2018-06-01/runtime/invocation/x/response")
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET on a POST endpoint: %d", resp.StatusCode)
	}
}

// TestRuntimeAPIRefusesWithoutTheSecretOrFromAnotherPeer: a request
// without the instance's secret, with a wrong one, or on a connection the
// peer check refuses gets 403 and changes nothing: the invocation in
// flight is neither handed out nor completed.
func TestRuntimeAPIRefusesWithoutTheSecretOrFromAnotherPeer(t *testing.T) {
	foreign := errors.New("not the instance")
	var refuse atomic.Bool
	api := newRuntimeAPI(profiles[APILambda], Spec{Name: "f", Version: "1"}, "0123456789abcdef", func(net.Conn) error {
		if refuse.Load() {
			return foreign
		}
		return nil
	}, slog.New(slog.DiscardHandler))
	srv := httptest.NewUnstartedServer(api)
	srv.Config.ConnContext = connContext
	srv.Start()
	defer srv.Close()
	c := &call{id: "req-1", req: invoke.Request{Payload: []byte(`{}`)}, deadline: time.Now().Add(time.Minute), result: make(chan callResult, 1)}
	go func() { api.calls <- c }()
	ok := srv.URL + "/0123456789abcdef/2018-06-01/runtime/invocation/"
	resp, err := http.Get(ok + "next")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/next with the secret: %d", resp.StatusCode)
	}
	refused := func(what, method, url string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(`"forged"`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", what, resp.StatusCode)
		}
		select {
		case r := <-c.result:
			t.Fatalf("%s completed the invocation in flight: %+v", what, r)
		default:
		}
	}
	for _, base := range []string{
		srv.URL + "/2018-06-01/runtime/invocation/",
		srv.URL + "/0123456789abcdeX/2018-06-01/runtime/invocation/",
		srv.URL + "/0123456789abcdef0/2018-06-01/runtime/invocation/",
		srv.URL + "/0123456789abcde/2018-06-01/runtime/invocation/",
	} {
		refused("/next at "+base, http.MethodGet, base+"next")
		refused("a response at "+base, http.MethodPost, base+"req-1/response")
	}
	refuse.Store(true)
	srv.CloseClientConnections() // the check is made once per connection
	refused("/next from another process", http.MethodGet, ok+"next")
	refused("a response from another process", http.MethodPost, ok+"req-1/response")
	refuse.Store(false)
	resp, err = http.Post(ok+"req-1/response", "application/json", strings.NewReader(`"mine"`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if r := <-c.result; r.err != nil || string(r.resp.Payload) != `"mine"` {
		t.Fatalf("the instance's own response: %+v", r)
	}
}

// BenchmarkRuntimeAPICheck: what the runtime API's isolation costs.
// "per-request" is every request's share (the secret's constant-time
// compare and the connection's cached verdict); "per-connection" the peer
// check made at a connection's first request (/proc/net/tcp, then the
// descriptors of the instance's processes, here this process's). Compare
// with BenchmarkWarmInvokeLambda's p50 (~200 µs; 5% is 10 µs).
func BenchmarkRuntimeAPICheck(b *testing.B) {
	server := loopbackPair(b)
	pids := []int{os.Getpid()}
	b.Run("per-connection", func(b *testing.B) {
		for b.Loop() {
			if err := checkPeer(server, os.Getuid(), pids); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("per-request", func(b *testing.B) {
		api := newRuntimeAPI(profiles[APILambda], Spec{Name: "f", Version: "1"}, "0123456789abcdef0123456789abcdef",
			func(c net.Conn) error { return checkPeer(c, os.Getuid(), pids) }, slog.New(slog.DiscardHandler))
		r := httptest.NewRequest(http.MethodGet, "/0123456789abcdef0123456789abcdef/2018-06-01/runtime/invocation/next", nil)
		r = r.WithContext(connContext(r.Context(), server))
		if _, err := api.admit(r); err != nil { // the connection's one check
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := api.admit(r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestPeerLookup: both ways of finding a loopback connection's client
// socket (sock_diag and /proc/net/tcp) agree, and the check admits only
// the uid and processes that hold it.
func TestPeerLookup(t *testing.T) {
	server := loopbackPair(t)
	from, to := server.RemoteAddr().(*net.TCPAddr), server.LocalAddr().(*net.TCPAddr)
	u1, i1, err1 := diagSocket(from, to)
	u2, i2, err2 := tcpSocket(from, to)
	if err1 != nil || err2 != nil || u1 != u2 || i1 != i2 || u1 != os.Getuid() || i1 == 0 {
		t.Fatalf("sock_diag: uid %d inode %d %v; /proc/net/tcp: uid %d inode %d %v", u1, i1, err1, u2, i2, err2)
	}
	if err := checkPeer(server, os.Getuid(), []int{os.Getpid()}); err != nil {
		t.Fatalf("this process's own connection: %v", err)
	}
	if err := checkPeer(server, os.Getuid(), []int{1}); !errors.Is(err, errForeignPeer) {
		t.Fatalf("a connection no listed process holds: %v, want errForeignPeer", err)
	}
	if err := checkPeer(server, os.Getuid()+1, []int{os.Getpid()}); !errors.Is(err, errForeignPeer) {
		t.Fatalf("a connection of another uid: %v, want errForeignPeer", err)
	}
	gone := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	if _, _, err := diagSocket(gone, to); !errors.Is(err, errForeignPeer) {
		t.Fatalf("sock_diag for no socket: %v, want errForeignPeer", err)
	}
}

// loopbackPair connects to a loopback listener of this process and
// returns the server's end; both ends close when the test ends.
func loopbackPair(tb testing.TB) net.Conn {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	server := <-accepted
	tb.Cleanup(func() { client.Close(); server.Close() })
	return server
}
