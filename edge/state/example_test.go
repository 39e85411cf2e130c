package state_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/state"
)

// A gateway's state file: the journal written before a deployment's step,
// read back after a restart.
func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "edgekit-state-")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "state.db")

	s, err := state.Open(path, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	_, _ = s.SaveJournal(state.Journal{Pending: &app.Deployment{Schema: 1, ID: "rollout-7", Revision: 7}, Step: "fetching"})
	_ = s.Close(context.Background())

	s, _ = state.Open(path, nil) // after a restart
	defer s.Close(context.Background())
	j, _ := s.Journal()
	fmt.Println(j.Pending.ID, j.Step, j.Generation)
	// Output: rollout-7 fetching 1
}
