// Package lincheck checks that a recorded history of calls to the profiles
// API is linearizable: that one register per profile, changed by POST, PUT
// and DELETE and read by GET, explains every answer the clients saw, in an
// order that respects real time (an operation that returned before another
// was called comes first). It is Jepsen's method, with
// github.com/anishathalye/porcupine as the checker.
//
// A History records operations from many goroutines; Check verifies it,
// profile by profile. The model (Step) is pure and deterministic, so the
// checker's own tests feed it hand-written histories, including ones that
// must be rejected.
//
// What the model takes as given:
//   - A write whose outcome the client never learned (a timeout, a transport
//     error, any 5xx, or 202 Accepted) is recorded with Status Unknown. It
//     may take effect at any time after its call, or never: its return is
//     placed at the end of time.
//   - A read that failed (no answer, or a status other than 200 and 404) is
//     not recorded: it observed nothing.
//   - Usernames are unique per write, so a read names the write it saw.
//   - A PUT appends one event per field it changes (username, email), so
//     its version grows by one or two, or stays when it changes nothing.
package lincheck

import (
	"fmt"
	"net/http"
)

// Kind is what an operation does to its profile.
type Kind uint8

const (
	// Create is POST /api/profile (the uid is known from its answer, or
	// chosen by an Idempotency-Key).
	Create Kind = iota + 1
	// Put is PUT /api/profile/{uid} with a new username.
	Put
	// Delete is DELETE /api/profile/{uid}.
	Delete
	// Get is GET /api/profile/{uid}.
	Get
)

func (k Kind) String() string {
	switch k {
	case Create:
		return "create"
	case Put:
		return "put"
	case Delete:
		return "delete"
	case Get:
		return "get"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Unknown is the Status of a write whose outcome the client never learned.
const Unknown = 0

// Input is what a client asked.
type Input struct {
	Kind Kind
	UID  string
	// Username and Email are the values a Create or Put writes.
	Username string
	Email    string
	// IfMatch is the version a Put or Delete sent in If-Match; 0 means
	// none was sent.
	IfMatch int64
}

// Output is what the client was answered.
type Output struct {
	// Status is the HTTP status, or Unknown.
	Status int
	// Version is the profile's version in the answer: the body's version
	// on 200 and 201, the ETag's on 412, 0 where the answer has none.
	Version int64
	// Username and Email are the body's on 200 and 201.
	Username string
	Email    string
}

// state is one profile's register. Version 0 means the uid never existed;
// Live false with a Version above 0 means it was deleted.
type state struct {
	Version  int64
	Username string
	Email    string
	Live     bool
}

func (s state) String() string {
	switch {
	case s.Version == 0:
		return "absent"
	case !s.Live:
		return fmt.Sprintf("deleted@v%d", s.Version)
	}
	return fmt.Sprintf("%s@v%d", withEmail(s.Username, s.Email), s.Version)
}

// withEmail renders a username and, when there is one, an email.
func withEmail(username, email string) string {
	if email == "" {
		return username
	}
	return username + " <" + email + ">"
}

// matches reports whether an If-Match of v lets a write apply to s.
func (s state) matches(ifMatch int64) bool { return ifMatch == 0 || ifMatch == s.Version }

// put returns the state after a PUT of in applies to s: one version per
// field that changes.
func (s state) put(in Input) state {
	next := state{Version: s.Version, Username: in.Username, Email: in.Email, Live: true}
	if in.Username != s.Username {
		next.Version++
	}
	if in.Email != s.Email {
		next.Version++
	}
	return next
}

// shows reports whether an answer's body shows state s.
func (s state) shows(out Output) bool {
	return out.Version == s.Version && out.Username == s.Username && out.Email == s.Email
}

// step is the sequential specification of one profile: whether out is a
// possible answer to in when the profile is in s, and the state after it.
func step(s state, in Input, out Output) (bool, state) {
	if out.Status == Unknown {
		// It took effect here or it never will (its return is at the end
		// of time, so "never" is a linearization after every other
		// operation). A write whose precondition fails changes nothing.
		switch in.Kind {
		case Create:
			if s.Version == 0 {
				return true, state{Version: 1, Username: in.Username, Email: in.Email, Live: true}
			}
		case Put:
			if s.Live && s.matches(in.IfMatch) {
				return true, s.put(in)
			}
		case Delete:
			if s.Live && s.matches(in.IfMatch) {
				return true, state{Version: s.Version + 1}
			}
		case Get:
			return false, s // reads without an answer are not recorded
		}
		return true, s
	}
	switch in.Kind {
	case Create:
		switch out.Status {
		case http.StatusCreated:
			next := state{Version: 1, Username: in.Username, Email: in.Email, Live: true}
			return s.Version == 0 && next.shows(out), next
		case http.StatusConflict: // profile-exists
			return s.Version > 0, s
		}
	case Put:
		switch out.Status {
		case http.StatusOK:
			next := s.put(in)
			return s.Live && s.matches(in.IfMatch) && next.shows(out), next
		case http.StatusNotFound:
			return !s.Live, s
		case http.StatusPreconditionFailed:
			return preconditionFailed(s, in, out), s
		}
	case Delete:
		switch out.Status {
		case http.StatusNoContent:
			return s.Live && s.matches(in.IfMatch), state{Version: s.Version + 1}
		case http.StatusNotFound:
			return !s.Live, s
		case http.StatusPreconditionFailed:
			return preconditionFailed(s, in, out), s
		}
	case Get:
		switch out.Status {
		case http.StatusOK:
			return s.Live && s.shows(out), s
		case http.StatusNotFound:
			return !s.Live, s
		}
	}
	return false, s // an answer the specification never gives
}

// preconditionFailed: a 412 needs a live profile whose version is not the
// If-Match, and names that version when it names one.
func preconditionFailed(s state, in Input, out Output) bool {
	return s.Live && in.IfMatch != 0 && in.IfMatch != s.Version && (out.Version == 0 || out.Version == s.Version)
}

// describe renders an operation for reports and the visualization.
func describe(in Input, out Output) string {
	var call string
	switch in.Kind {
	case Create, Put:
		call = fmt.Sprintf("%s(%s)", in.Kind, withEmail(in.Username, in.Email))
	default:
		call = in.Kind.String() + "()"
	}
	if in.IfMatch != 0 {
		call += fmt.Sprintf(" if-match v%d", in.IfMatch)
	}
	switch {
	case out.Status == Unknown:
		return call + " -> ?"
	case out.Version != 0 && out.Username != "":
		return fmt.Sprintf("%s -> %d %s@v%d", call, out.Status, withEmail(out.Username, out.Email), out.Version)
	case out.Version != 0:
		return fmt.Sprintf("%s -> %d v%d", call, out.Status, out.Version)
	}
	return fmt.Sprintf("%s -> %d", call, out.Status)
}
