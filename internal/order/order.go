// Package order checks start orders: names that each start after others
// must not wait for each other in a cycle. The container manager and the
// application model share it.
package order

// Cycle returns a cycle in after (each name → the names it starts after),
// as the path that closes it ("a", "b", "a"), or nil when there is none.
// Names are visited in the order roots gives them, so the answer is
// stable.
func Cycle(roots []string, after map[string][]string) []string {
	const (
		visiting = 1
		done     = 2
	)
	mark := map[string]int{}
	var visit func(name string, path []string) []string
	visit = func(name string, path []string) []string {
		switch mark[name] {
		case visiting:
			return append(path, name)
		case done:
			return nil
		}
		mark[name] = visiting
		for _, d := range after[name] {
			if c := visit(d, append(path, name)); c != nil {
				return c
			}
		}
		mark[name] = done
		return nil
	}
	for _, r := range roots {
		if c := visit(r, nil); c != nil {
			return c
		}
	}
	return nil
}
