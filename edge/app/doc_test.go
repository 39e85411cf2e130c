package app_test

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"testing"

	"github.com/edgekit/edgekit/edge/app"
)

// TestDocumentedShapes: the documents in docs/DEPLOYMENTS.md are what this
// package reads: the deployment is the test example, and the status
// decodes with no field unknown.
func TestDocumentedShapes(t *testing.T) {
	doc, err := os.ReadFile("../../docs/DEPLOYMENTS.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := map[string][]byte{}
	for _, m := range regexp.MustCompile("(?s)```json (\\w+)\n(.*?)\n```").FindAllSubmatch(doc, -1) {
		blocks[string(m[1])] = m[2]
	}
	if !bytes.Equal(bytes.TrimSpace(blocks["deployment"]), bytes.TrimSpace(example(t))) {
		t.Error("the deployment in docs/DEPLOYMENTS.md is not testdata/deployment.json")
	}
	if _, err := app.ParseDeployment(blocks["deployment"]); err != nil {
		t.Errorf("the documented deployment: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(blocks["status"]))
	dec.DisallowUnknownFields()
	var st app.Status
	if err := dec.Decode(&st); err != nil || st.Outcome != app.OutcomeRolledBack || len(st.Apps) != 3 || st.Running == nil {
		t.Errorf("the documented status: %+v %v", st, err)
	}
}
