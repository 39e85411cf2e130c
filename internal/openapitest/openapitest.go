// Package openapitest reads an OpenAPI document's operations, for the
// tests that check an API serves exactly what its document describes.
package openapitest

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
)

// Operations returns the document's operations as "METHOD /path"
// patterns (net/http's ServeMux form), sorted.
func Operations(t testing.TB, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("%s: %v (openapi %q)", path, err, doc.OpenAPI)
	}
	var ops []string
	for p, methods := range doc.Paths {
		for m := range methods {
			ops = append(ops, strings.ToUpper(m)+" "+p)
		}
	}
	slices.Sort(ops)
	return ops
}

// Check fails t unless served (patterns, in any order) and the
// document's operations are the same.
func Check(t testing.TB, path string, served []string) {
	t.Helper()
	documented := Operations(t, path)
	served = slices.Clone(served)
	slices.Sort(served)
	if !slices.Equal(served, documented) {
		t.Errorf("the API serves\n%s\n%s describes\n%s", strings.Join(served, "\n"), path, strings.Join(documented, "\n"))
	}
}
