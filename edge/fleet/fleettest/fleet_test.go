package fleettest_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/edgekit/edgekit/edge/fleet/fleettest"
)

// recorder is a testing.TB that keeps what the helper under test reports
// and the cleanups it registers, to run them when the test says.
type recorder struct {
	testing.TB
	errs     []string
	cleanups []func()
}

func (r *recorder) Helper()          {}
func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Errorf(format string, a ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, a...))
}
func (r *recorder) Fatalf(format string, a ...any) { r.Errorf(format, a...); r.FailNow() }
func (r *recorder) cleanup() {
	for _, f := range slices.Backward(r.cleanups) {
		f()
	}
}

// TestRunAfterClose: a test that ends, and closes its fleet, before Run's
// goroutine has started (seen under load: TestAudit takes 10 ms) is not
// failed by the Run that then finds the fleet closed.
func TestRunAfterClose(t *testing.T) {
	f, _, _ := fleettest.New(t, nil)
	if err := f.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{TB: t}
	fleettest.Run(rec, f)
	rec.cleanup()
	if len(rec.errs) != 0 {
		t.Errorf("Run on a closed fleet failed the test: %q", rec.errs)
	}
}
