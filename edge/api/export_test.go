package api

// Routes lists the API's patterns, for the test that checks them against
// docs/openapi.json.
func Routes() []string {
	var out []string
	for _, r := range (&API{}).routes() {
		out = append(out, r.pattern)
	}
	return out
}
