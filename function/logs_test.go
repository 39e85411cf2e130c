package function_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/logstore"
	"github.com/edgekit/edgekit/invoke"
)

// TestLogsQuery: a function's output lines, its REPORT records and an
// in-process handler's logging are stored and found by request id and
// substring.
func TestLogsQuery(t *testing.T) {
	h := newHost(t, nil)
	deploy(t, h, lambdaSpec("logged", "echo"))
	resp, err := h.Invoke(context.Background(), "logged", invoke.Request{Payload: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		RequestID string `json:"request_id"`
	}
	_ = json.Unmarshal(resp.Payload, &got)

	// Output lines are in the store, with the request id, by the time the
	// invocation returns.
	byID, err := h.Logs(logstore.Query{Function: "logged", Contains: got.RequestID})
	if err != nil {
		t.Fatal(err)
	}
	if len(byID) != 1 || byID[0].Message != "handling "+got.RequestID || byID[0].Attrs["stream"] != "stderr" || byID[0].Instance == "" || byID[0].RequestID != got.RequestID {
		t.Errorf("output line for %s: %+v", got.RequestID, byID)
	}
	reports, _ := h.Logs(logstore.Query{Function: "logged", Contains: "REPORT"})
	if len(reports) != 1 || reports[0].RequestID == "" || reports[0].Attrs["outcome"] != "ok" || reports[0].Attrs["max_rss_kb"] == "0" {
		t.Errorf("REPORT record: %+v", reports)
	}

	register(t, h, "chatty", func(ctx context.Context, req invoke.Request) (invoke.Response, error) {
		function.Logger(ctx).Warn("valve stuck", "valve", "v7")
		return invoke.Response{}, nil
	})
	deploy(t, h, function.Spec{Name: "inproc", Version: "1", Runtime: function.RuntimeGo, Handler: "chatty"})
	if _, err := h.Invoke(context.Background(), "inproc", invoke.Request{}); err != nil {
		t.Fatal(err)
	}
	warns, _ := h.Logs(logstore.Query{Function: "inproc", MinLevel: slog.LevelWarn})
	if len(warns) != 1 || warns[0].Message != "valve stuck" || warns[0].Attrs["valve"] != "v7" || warns[0].RequestID == "" {
		t.Errorf("in-process handler's record: %+v", warns)
	}
	if rs, err := h.Logs(logstore.Query{Function: "missing"}); err != nil || len(rs) != 0 {
		t.Errorf("query of a function without logs: %v %v", rs, err)
	}
}
