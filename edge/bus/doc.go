// Package bus defines the message bus every part of edgekit speaks: device
// drivers report on it, triggers listen on it, functions publish on it, and
// the gateway bridges it to MQTT brokers.
//
// It is for two kinds of reader: code that publishes and subscribes (use the
// [Bus] interface and [Message]), and code that implements a bus (implement
// [Bus], run the conformance suite in package bustest, and use [FilterIndex]
// for topic matching).
//
// # Semantics
//
// Messages follow MQTT v5: a topic name, a payload, a QoS of 0, 1 or 2, the
// retain flag, user properties, content type, response topic, correlation
// data and a message expiry interval. Topic names and topic filters are
// validated and matched as MQTT v5 section 4.7 says: '/' separates levels,
// '+' matches exactly one level, '#' matches any number of levels including
// the parent, a filter that starts with a wildcard does not match a topic
// that starts with '$', and "$share/{group}/{filter}" is a shared
// subscription: each message that matches the filter is delivered to one
// member of the group.
//
// # Delivery contract
//
// Every implementation in edgekit keeps this contract; bustest checks it.
//
//   - Ordering: messages are handed to one subscription's handler one at a
//     time, in the order the bus received them from one publisher. There is
//     no order between subscriptions or between publishers.
//   - Buffering: each subscription has a bounded buffer
//     ([SubscribeOptions].Buffer). When it is full, a message whose delivered
//     QoS is 0 is dropped and counted ([Subscription].Dropped); for QoS 1 and
//     2 the delivering side waits for room: Publish blocks on an in-process
//     bus (until its context ends), and an MQTT bus stops routing what it
//     receives, and the broker holds the rest. Nothing at QoS 1 or 2 is
//     dropped for a slow subscriber.
//   - Handlers return no error: the bus does not redeliver. A handler that
//     needs retries or a dead-letter topic does that itself (package trigger
//     does). An MQTT bus with a session the broker keeps acknowledges a QoS
//     1 or 2 message to the broker only when every local handler it went to
//     has returned, so a gateway that stops or crashes before gets it again
//     in its next session (at least once). Acknowledgements go in the order messages came, as MQTT
//     requires: a slow handler holds back the acknowledgements after it,
//     and the broker sends no more than its in-flight window beyond them. A handler that panics is recovered and logged with its stack; the
//     subscription goes on with the next message.
//   - A handler must not block forever and must not modify the message; it
//     may publish, subscribe and unsubscribe. It must not call Close on the
//     bus that runs it (Close waits for handlers to return).
//   - Retained messages are delivered to a new non-shared subscription before
//     any live message, with Retain set. Live messages arrive with Retain
//     cleared unless [SubscribeOptions].RetainAsPublished is set.
//   - Publish does not copy the payload, the correlation data or the user
//     properties: do not modify them after Publish returns.
//
// # Lifecycle and concurrency
//
// A Bus is safe for concurrent use. Close stops every subscription, waits for
// running handlers to return, and is safe to call more than once; after it,
// Publish and Subscribe return [ErrClosed].
package bus
