// Command webapp is the example gateway's container app: a small web page
// showing its version and configuration, and /health for its probe. The
// example builds it as a static binary and imports it as a local image
// (no registry is needed).
package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	addr := os.Getenv("LISTEN")
	if addr == "" {
		addr = "127.0.0.1:8781"
	}
	http.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "edgekit example web app, version %s\nconfiguration: %s\n", os.Getenv("EDGEKIT_VERSION"), os.Getenv("EDGEKIT_CONFIG"))
	})
	fmt.Println("listening on", addr)
	if err := http.ListenAndServe(addr, nil); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
}
