package device

// Poll runs one poll of the named device's properties ids, as a poll group
// does, for benchmarks.
func Poll(m *Manager, name string, ids []string) error {
	d, err := m.device(name)
	if err != nil {
		return err
	}
	m.poll(d, ids)
	return nil
}
