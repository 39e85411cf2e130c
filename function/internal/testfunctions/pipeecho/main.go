// Command pipeecho writes back whatever it reads on stdin: the Go floor
// the native protocol benchmark measures the host against (a round trip
// over pipes to a long-lived Go child, with no protocol at all).
package main

import "os"

func main() {
	buf := make([]byte, 64<<10)
	for {
		n, err := os.Stdin.Read(buf)
		if err != nil {
			return
		}
		if _, err := os.Stdout.Write(buf[:n]); err != nil {
			return
		}
	}
}
