package app

import "time"

// LogsRequest asks a gateway for an app's recent log lines, oldest first:
// a function's records, or a container's output.
type LogsRequest struct {
	App string `json:"app"`
	// Limit bounds the lines (default 200, at most MaxLogLines);
	// Contains keeps only the lines holding it.
	Limit    int    `json:"limit,omitempty"`
	Contains string `json:"contains,omitempty"`
}

// MaxLogLines bounds the lines of one LogsReply; MaxLogLine one line's
// text, in bytes (longer ones are cut, with Cut set).
const (
	MaxLogLines = 1000
	MaxLogLine  = 4096
)

// LogsReply is a gateway's answer to a LogsRequest.
type LogsReply struct {
	App   string    `json:"app"`
	Kind  Kind      `json:"kind"`
	Lines []LogLine `json:"lines"`
}

// LogLine is one line of an app's log.
type LogLine struct {
	Time  time.Time `json:"time,omitzero"`
	Level string    `json:"level,omitempty"`
	Text  string    `json:"text"`
	Cut   bool      `json:"cut,omitempty"`
}
