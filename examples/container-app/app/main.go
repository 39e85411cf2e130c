// Command app is the container application of the example: an HTTP
// server on :8080 whose /health answers while it is well. APP_VERSION names
// the version; APP_BROKEN=1 makes a version that exits at once, for the
// rollback.
package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	version := os.Getenv("APP_VERSION")
	fmt.Println("app", version, "starting")
	if os.Getenv("APP_BROKEN") == "1" {
		fmt.Println("app", version, "cannot start: missing configuration")
		os.Exit(3)
	}
	http.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok", version) })
	fmt.Println(http.ListenAndServe(":8080", nil))
}
