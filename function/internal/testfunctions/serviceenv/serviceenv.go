// Package serviceenv reads, for the test functions, the variables a cloud
// function service defines that the process has.
package serviceenv

import (
	"os"
	"strings"
)

// Read returns the process's AWS_*, LAMBDA_*, FC_*, _HANDLER and TZ
// variables.
func Read() map[string]string {
	out := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "LAMBDA_") || strings.HasPrefix(k, "FC_") || k == "_HANDLER" || k == "TZ" {
			out[k] = v
		}
	}
	return out
}
