package mqttbus

// SubscriptionIDCount exposes the size of the identifier table to the
// external tests.
func SubscriptionIDCount(c *Client) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byID)
}

const IDsPerEntry = idsPerEntry
