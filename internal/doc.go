// Package internal holds what several of edgekit's packages share and no
// importer should depend on: backoff schedules, the on-disk queue, process
// helpers and test helpers that start real components (Mosquitto). Its
// subpackages are not part of the public API and may change at any time.
package internal
