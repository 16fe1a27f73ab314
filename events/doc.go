// Package events is the domain core of profiles: the closed set of event
// types, their JSON envelope and Kafka headers, and the pure fold Apply that
// turns a profile's event history into its current state.
//
// Everything here is free of I/O. command-svc uses Apply to validate a
// command against the current state before it appends the event, and the
// projector uses the very same Apply to fold the log into the snapshot
// topic, so the two can never disagree about what an event means.
package events
