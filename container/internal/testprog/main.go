// Command testprog is the program in the container tests' image (a static
// binary imported with podman import; no registry is reachable here). Its
// mode comes from the environment, as container/containertest describes:
//
//	EDGEKIT_TEST_MODE=serve        run until SIGTERM, then exit 0 (default);
//	                               with EDGEKIT_TEST_HTTP=addr, answer GET /health
//	EDGEKIT_TEST_MODE=exit         exit with EDGEKIT_TEST_CODE after EDGEKIT_TEST_AFTER
//	EDGEKIT_TEST_MODE=ignore-term  SIGTERM does nothing
//	EDGEKIT_TEST_MODE=alloc        allocate EDGEKIT_TEST_MB megabytes, then serve
//	EDGEKIT_TEST_MODE=alloc-child  run a child in mode alloc (which a memory
//	                               limit gets killed), then serve on
//
// It prints "started" first, and "echo ARGS" run as a command prints ARGS
// (for exec).
package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "echo" {
		fmt.Println(strings.Join(os.Args[2:], " "))
		return
	}
	if len(os.Args) > 2 && os.Args[1] == "exit" {
		code, _ := strconv.Atoi(os.Args[2])
		os.Exit(code)
	}
	fmt.Println(time.Now().UTC().Format(time.RFC3339Nano), "started")
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	if addr := os.Getenv("EDGEKIT_TEST_HTTP"); addr != "" {
		http.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		go func() { fmt.Println(http.ListenAndServe(addr, nil)) }()
	}
	var hog [][]byte
	switch os.Getenv("EDGEKIT_TEST_MODE") {
	case "exit":
		after, _ := time.ParseDuration(os.Getenv("EDGEKIT_TEST_AFTER"))
		code, _ := strconv.Atoi(os.Getenv("EDGEKIT_TEST_CODE"))
		select {
		case <-time.After(after):
		case <-term:
		}
		os.Exit(code)
	case "ignore-term":
		for range term {
			fmt.Println("SIGTERM ignored")
		}
	case "alloc":
		mb, _ := strconv.Atoi(os.Getenv("EDGEKIT_TEST_MB"))
		for range mb {
			chunk := make([]byte, 1<<20)
			for i := range chunk {
				chunk[i] = 1
			}
			hog = append(hog, chunk)
		}
		fmt.Println("allocated", len(hog), "MB")
	case "alloc-child":
		child := exec.Command(os.Args[0])
		child.Env = append(os.Environ(), "EDGEKIT_TEST_MODE=alloc")
		child.Stdout, child.Stderr = os.Stdout, os.Stderr
		fmt.Println("child:", child.Run())
	}
	<-term
	fmt.Println("stopping")
}
