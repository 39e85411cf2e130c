package fleet

// ParseReport is parseReport for the package's fuzz test: the instance it
// is about, and whether it is a status or a presence.
func ParseReport(topic string, payload []byte) (instance string, status, presence bool, err error) {
	r, err := parseReport(topic, payload)
	return r.instance, r.status != nil, r.presence != nil, err
}
