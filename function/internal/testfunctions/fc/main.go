// Command fc is a function speaking the Alibaba Function Compute runtime
// API (FC_RUNTIME_API, 2020-11-11) in the order fc-runtime-go-sdk's invoke
// loop uses: it asks for the next invocation before it answers the current
// one (GET .../invocation/next, then, while that waits, POST
// .../{id}/response or .../{id}/error, expecting 200), and like the SDK it
// refuses an invocation without x-fc-function-timeout.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/edgekit/edgekit/function/internal/testfunctions/serviceenv"
)

type next struct {
	resp  *http.Response
	event []byte
	err   error
}

func main() {
	base := "http://" + os.Getenv("FC_RUNTIME_API") + "/2020-11-11/runtime/invocation/"
	get := func() <-chan next {
		ch := make(chan next, 1)
		go func() {
			resp, err := http.Get(base + "next")
			if err != nil {
				ch <- next{err: err}
				return
			}
			event, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			ch <- next{resp: resp, event: event}
		}()
		return ch
	}
	pending := get()
	for {
		n := <-pending
		if n.err != nil {
			fmt.Fprintln(os.Stderr, "next:", n.err)
			os.Exit(1)
		}
		pending = get() // the next, asked for before this one is answered
		h := n.resp.Header
		id := h.Get("x-fc-request-id")
		var post *http.Response
		var err error
		switch {
		case h.Get("x-fc-function-timeout") == "":
			post, err = http.Post(base+id+"/error", "application/json", bytes.NewBufferString(`{"errorMessage":"no x-fc-function-timeout","errorType":"InvalidInvocation"}`))
		case bytes.Equal(n.event, []byte(`"fail"`)):
			post, err = http.Post(base+id+"/error", "application/json", bytes.NewBufferString(`{"errorMessage":"asked to fail","errorType":"FCError"}`))
		default:
			headers := map[string]string{}
			for k, v := range h {
				if k := strings.ToLower(k); strings.HasPrefix(k, "x-fc-") && k != "x-fc-request-id" && k != "x-fc-function-deadline" {
					headers[k] = v[0]
				}
			}
			out, _ := json.Marshal(map[string]any{"fc": true, "event": json.RawMessage(n.event), "deadline_set": h.Get("x-fc-function-deadline") != "", "headers": headers, "env": serviceenv.Read()})
			post, err = http.Post(base+id+"/response", "application/json", bytes.NewReader(out))
		}
		if err != nil || post.StatusCode != http.StatusOK {
			fmt.Fprintln(os.Stderr, "post:", err, post)
			os.Exit(1)
		}
		post.Body.Close()
	}
}
