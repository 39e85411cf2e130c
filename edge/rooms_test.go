package edge_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestRooms: the import rules of docs/ARCHITECTURE.md. Nothing under
// edge/bus or edge/broker imports a room above it; function, container
// and device never import each other; the application model imports the
// standard library and its leaves only; the fleet imports the application
// model and the bus only; no pillar imports edge.
func TestRooms(t *testing.T) {
	const mod = "github.com/edgekit/edgekit/"
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "github.com/edgekit/edgekit/...")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	under := func(pkg, room string) bool { return pkg == mod+room || strings.HasPrefix(pkg, mod+room+"/") }
	rooms := []string{"function", "trigger", "container", "device"}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, imports := fields[0], fields[1:]
		for _, imp := range imports {
			if !strings.HasPrefix(imp, mod) {
				if under(pkg, "edge/app") && strings.Contains(imp, ".") {
					t.Errorf("%s imports %s: the application model takes the standard library only", pkg, imp)
				}
				continue
			}
			checked++
			switch {
			case (under(pkg, "edge/bus") || under(pkg, "edge/broker")) && !(under(imp, "edge/bus") || under(imp, "edge/broker") || under(imp, "internal")):
				t.Errorf("%s imports %s: the ground floor imports no room above it", pkg, imp)
			case under(pkg, "edge/app") && !(under(imp, "edge/app") || under(imp, "function/spec") || under(imp, "internal/order")):
				t.Errorf("%s imports %s: the application model imports its leaves only", pkg, imp)
			case under(pkg, "edge/fleet") && !(under(imp, "edge/fleet") || under(imp, "edge/app") || under(imp, "edge/bus") || under(imp, "function/spec") || under(imp, "internal")):
				t.Errorf("%s imports %s: the fleet imports the application model and the bus only, never the gateway", pkg, imp)
			}
			for _, from := range []string{"function", "container", "device"} {
				for _, to := range []string{"function", "container", "device"} {
					if from != to && under(pkg, from) && under(imp, to) && !under(imp, "function/spec") {
						t.Errorf("%s imports %s: function, container and device never import each other", pkg, imp)
					}
				}
			}
			for _, room := range rooms {
				if under(pkg, room) && (imp == mod+"edge" || under(imp, "edge/app") || under(imp, "edge/state") || under(imp, "edge/reconcile") || under(imp, "edge/api")) {
					t.Errorf("%s imports %s: the pillars stay unaware of the gateway", pkg, imp)
				}
			}
		}
	}
	if checked < 100 {
		t.Fatalf("only %d imports within the module checked: the listing is wrong", checked)
	}
}
