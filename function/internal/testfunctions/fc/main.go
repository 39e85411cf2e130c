// Command fc is a function speaking the Alibaba Function Compute runtime
// API (FC_RUNTIME_API, 2020-11-11), as fc-runtime-go-sdk's invoke loop does:
// GET .../invocation/next, then POST .../{id}/response or .../{id}/error,
// expecting 200.
package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
)

func main() {
	base := "http://" + os.Getenv("FC_RUNTIME_API") + "/2020-11-11/runtime/invocation/"
	for {
		resp, err := http.Get(base + "next")
		if err != nil {
			fmt.Fprintln(os.Stderr, "next:", err)
			os.Exit(1)
		}
		event, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		id := resp.Header.Get("x-fc-request-id")
		var post *http.Response
		if bytes.Equal(event, []byte(`"fail"`)) {
			post, err = http.Post(base+id+"/error", "application/json", bytes.NewBufferString(`{"errorMessage":"asked to fail","errorType":"FCError"}`))
		} else {
			out := fmt.Sprintf(`{"fc":true,"event":%s,"deadline_set":%t}`, event, resp.Header.Get("x-fc-function-deadline") != "")
			post, err = http.Post(base+id+"/response", "application/json", bytes.NewBufferString(out))
		}
		if err != nil || post.StatusCode != http.StatusOK {
			fmt.Fprintln(os.Stderr, "post:", err, post)
			os.Exit(1)
		}
		post.Body.Close()
	}
}
