// Package app holds query-svc's use cases, one per file. They depend only on
// the ProfileView interface declared here, not on Pebble or Kafka.
package app

import (
	"errors"

	"profiles/events"
)

// Errors returned by the queries. Check them with errors.Is.
var (
	// ErrNotFound: the profile does not exist, or has been deleted.
	ErrNotFound = errors.New("profile not found")
	// ErrNotYet: the view did not reach the requested version in time.
	ErrNotYet = errors.New("view has not reached the requested version")
)

// ProfileView is what the queries need of the materialized view. Get
// returns a deleted profile with Deleted set, and an error wrapping the
// view's not-found sentinel for a uid it has never seen (the handlers are
// given that sentinel: GetProfileHandler.NotFound).
type ProfileView interface {
	Get(uid string) (events.Profile, error)
	// GetJSON is Get with the profile as the API answers it: its JSON
	// (events.Profile's), appended to dst, which the view encoded once
	// when it stored that version. JSON is empty for a deleted profile.
	GetJSON(uid string, dst []byte) (ProfileJSON, error)
	SearchEmail(email string) ([]events.Profile, error)
	// SearchEmailJSON is SearchEmail with the answer as the API sends it:
	// the JSON array of the live profiles, appended to dst.
	SearchEmailJSON(email string, dst []byte) ([]byte, error)
	// IndexEntry returns the email index entry of (email, uid): the profile,
	// or a deleted marker once uid no longer holds email.
	IndexEntry(email, uid string) (events.Profile, error)
	// WatchProfile returns a channel closed at the next change of the
	// profile uid (or one of the whole view), and the func that ends the
	// watch. A query takes it before it reads, so that no change after
	// its read is missed, and ends it once it no longer waits.
	WatchProfile(uid string) (<-chan struct{}, func())
	// WatchIndexEntry is WatchProfile for the index entry of (email, uid).
	WatchIndexEntry(email, uid string) (<-chan struct{}, func())
}

// ProfileJSON is a profile of the view as the API answers it.
type ProfileJSON struct {
	// JSON is the profile's JSON (events.Profile's, without a newline);
	// empty when Deleted.
	JSON    []byte
	Version int64
	Deleted bool
}
