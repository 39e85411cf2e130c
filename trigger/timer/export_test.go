package timer

// Runs is how many runs are in flight on s: a run is over when its
// trigger can start the next one, a little after its function returned.
func Runs(s *Scheduler) int64 { return s.runs.Load() }
