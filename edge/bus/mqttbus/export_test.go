package mqttbus

import "time"

// SubscriptionIDCount exposes the size of the identifier table to the
// external tests.
func SubscriptionIDCount(c *Client) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byID)
}

const IDsPerEntry = idsPerEntry

// NewWithAckInterval is New with paho's acknowledgement interval.
func NewWithAckInterval(o *Options, d time.Duration) (*Client, error) { return newClient(o, d) }

// OwedAcks counts the acknowledgements due and not yet written.
func OwedAcks(c *Client) int {
	c.ackMu.Lock()
	defer c.ackMu.Unlock()
	n := 0
	for _, es := range c.owed {
		n += len(es)
	}
	return n
}
