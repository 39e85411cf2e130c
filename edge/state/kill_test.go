package state_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/state"
)

// TestMain runs the writer child when asked to.
func TestMain(m *testing.M) {
	if path := os.Getenv("EDGEKIT_STATE_WRITER"); path != "" {
		writer(path)
		return
	}
	os.Exit(m.Run())
}

// writer writes records in a loop, printing each generation once its
// transactions are committed, until it is killed.
func writer(path string) {
	s, err := state.Open(path, &state.Options{HistoryPerApp: 10})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	last, err := s.Journal()
	if err != nil {
		fmt.Println("journal:", err)
		os.Exit(1)
	}
	// Each write's revision and history version are the journal
	// generation it makes.
	for i := int(last.Generation); ; i++ {
		j, err := s.SaveJournal(state.Journal{Step: "step-" + strconv.Itoa(i), Pending: &app.Deployment{Schema: 1, ID: "d", Revision: uint64(i + 1)}})
		if err == nil {
			err = s.AppendHistory(app.AppStatus{App: "web", Version: strconv.FormatUint(j.Generation, 10)})
		}
		if err == nil {
			err = s.PutDevice(state.Device{Name: "dev-" + strconv.Itoa(i%7), Driver: "sim", Config: json.RawMessage(`{"i":` + strconv.Itoa(i) + `}`)})
		}
		if err != nil {
			fmt.Println("write:", err)
			os.Exit(1)
		}
		fmt.Println(j.Generation)
	}
}

// TestKilledAtAnyPoint: a writer killed with SIGKILL at 25 random points
// leaves a file that opens, whose every record reads back, whose journal
// is at least the last generation the writer saw committed, and whose
// history stays within its bound.
func TestKilledAtAnyPoint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	var committed uint64
	for round := range 25 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "EDGEKIT_STATE_WRITER="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		for n := 1 + rand.IntN(40); n > 0 && lines.Scan(); n-- {
			g, err := strconv.ParseUint(lines.Text(), 10, 64)
			if err != nil {
				t.Fatalf("round %d: the writer said %q", round, lines.Text())
			}
			committed = g
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()

		s, err := state.Open(path, &state.Options{HistoryPerApp: 10})
		if err != nil {
			t.Fatalf("round %d: opening after the kill: %v", round, err)
		}
		j, err := s.Journal()
		if err != nil || j.Generation < committed || j.Pending == nil || j.Pending.Revision != j.Generation {
			t.Errorf("round %d: journal %+v %v, committed generation %d", round, j, err, committed)
		}
		h, err := s.History("web", 0)
		if err != nil || len(h) == 0 || len(h) > 10 {
			t.Errorf("round %d: history of %d: %v", round, len(h), err)
		}
		for i := 1; i < len(h); i++ {
			a, _ := strconv.Atoi(h[i-1].Version)
			b, _ := strconv.Atoi(h[i].Version)
			if a <= b {
				t.Errorf("round %d: history out of order: %s before %s", round, h[i-1].Version, h[i].Version)
			}
		}
		if _, err := s.Devices(); err != nil {
			t.Errorf("round %d: devices: %v", round, err)
		}
		if err := s.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}
