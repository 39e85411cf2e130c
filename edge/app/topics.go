package app

import "time"

// The topics between the central side and a gateway, on the upstream
// broker (docs/TOPICS.md). Each instance has its own three; the fleet
// subscribes to the status and presence of all of them with the filters
// StatusFilter and PresenceFilter.

// TopicPrefix is what an instance's topics start with upstream.
func TopicPrefix(instance string) string { return "edgekit/instances/" + instance + "/" }

// DesiredTopic carries the instance's desired deployment (retained, QoS 1).
func DesiredTopic(instance string) string { return TopicPrefix(instance) + "desired" }

// StatusTopic carries the instance's deployment status (retained, QoS 1).
func StatusTopic(instance string) string { return TopicPrefix(instance) + "status" }

// PresenceTopic carries whether the instance is connected (retained,
// QoS 1; the upstream connection's Will says offline).
func PresenceTopic(instance string) string { return TopicPrefix(instance) + "presence" }

// Filters matching every instance's status and presence topics.
const (
	StatusFilter   = "edgekit/instances/+/status"
	PresenceFilter = "edgekit/instances/+/presence"
)

// InstanceOf returns the instance a topic of TopicPrefix's form is about,
// and the rest of the topic after it ("status", "presence", "desired").
func InstanceOf(topic string) (instance, rest string, ok bool) {
	const prefix = "edgekit/instances/"
	if len(topic) <= len(prefix) || topic[:len(prefix)] != prefix {
		return "", "", false
	}
	t := topic[len(prefix):]
	for i := 0; i < len(t); i++ {
		if t[i] == '/' {
			if i == 0 || i == len(t)-1 {
				return "", "", false
			}
			return t[:i], t[i+1:], true
		}
	}
	return "", "", false
}

// Presence is the document on the presence topic.
type Presence struct {
	Instance string    `json:"instance"`
	Online   bool      `json:"online"`
	Time     time.Time `json:"time"`
}

// LogsTopic takes MQTT v5 requests for an app's recent log lines (a
// LogsRequest; the reply is a LogsReply). A request's response topic must
// start with RepliesPrefix(instance): the gateway answers nowhere else.
func LogsTopic(instance string) string { return TopicPrefix(instance) + "logs" }

// RepliesPrefix is where an instance's replies go.
func RepliesPrefix(instance string) string { return TopicPrefix(instance) + "replies/" }
