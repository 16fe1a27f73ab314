package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"profiles/events"
)

// ErrInvalidIdempotencyKey: an Idempotency-Key is not 1-255 visible ASCII
// characters.
var ErrInvalidIdempotencyKey = errors.New("invalid idempotency key")

// idempotencyNamespace is the UUID namespace of uids derived from
// Idempotency-Keys. Changing it would break retries across a deploy.
var idempotencyNamespace = uuid.MustParse("5b4f3f0e-6f0a-4e8e-9c1d-2f7a3c9e8d10")

// UIDForKey returns the uid of the profile a POST with this Idempotency-Key
// creates: a name-based (version 5) UUID, the same on every instance, so a
// retry reaches the same owner and finds the profile it created.
func UIDForKey(key string) string { return uuid.NewSHA1(idempotencyNamespace, []byte(key)).String() }

// CheckIdempotencyKey returns ErrInvalidIdempotencyKey unless key is empty
// (none) or 1-255 visible ASCII characters.
func CheckIdempotencyKey(key string) error {
	if len(key) > 255 {
		return ErrInvalidIdempotencyKey
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return ErrInvalidIdempotencyKey
		}
	}
	return nil
}

// NewProfileUID returns the uid of the profile that a POST by c with the
// Idempotency-Key key ("" for none) creates, and whether that uid comes
// from key (CreateProfile.Idempotent: a retry replays the creation).
//
// A caller without admin (c has a Subject, and no Admin) may own one
// profile only, the one whose uid is its Subject: that is the uid,
// whatever key it sends, and a second POST finds it taken; a Subject that
// is no UUID can own none (ErrNotOwner). Any other caller (an admin, or
// the zero Caller of a port without authentication) gets the uid derived
// from key, or newID's. An invalid key is ErrInvalidIdempotencyKey.
func NewProfileUID(c Caller, key string, newID func() string) (uid string, idempotent bool, err error) {
	if err := CheckIdempotencyKey(key); err != nil {
		return "", false, err
	}
	switch {
	case c.ownProfileOnly() && !isUID(c.Subject):
		return "", false, fmt.Errorf("%w: the subject %q is not a UUID", ErrNotOwner, c.Subject)
	case c.ownProfileOnly():
		return c.Subject, false, nil
	case key != "":
		return UIDForKey(key), true, nil
	default:
		return newID(), false, nil
	}
}

// ColocatedUID returns a fresh uid (newID's) whose partition is the one of
// the claim of email, so that one owner writes both: the claim then goes
// into the transaction of the ProfileCreated event, with no hop to
// another instance and no transaction of its own. partitionOf places a
// key (a uid, or an email's claim key) and emailKey is the claim key of
// an email. It draws at most maxColocationDraws uids (with P partitions a
// draw hits with probability 1/P) and returns the last one when none hits:
// the claim is then written where it belongs, as for any other uid.
func ColocatedUID(newID func() string, partitionOf func(key string) int32, emailKey events.EmailKeyer) func(email string) string {
	return func(email string) string {
		want := partitionOf(emailKey.EmailKey(email))
		uid := newID()
		for range maxColocationDraws - 1 {
			if partitionOf(uid) == want {
				break
			}
			uid = newID()
		}
		return uid
	}
}

// maxColocationDraws bounds ColocatedUID: with 12 partitions, 256 draws
// all miss with probability (11/12)^256, about 2e-10.
const maxColocationDraws = 256

// Idempotent reports whether a POST by c with the Idempotency-Key key
// replays the creation on a retry: never for a caller's own profile,
// whose uid is its Subject (a retry finds it taken).
func (c Caller) Idempotent(key string) bool { return key != "" && !c.ownProfileOnly() }

// ownProfileOnly reports whether c may own one profile only, the one whose
// uid is its Subject: an authenticated caller without admin.
func (c Caller) ownProfileOnly() bool { return c.Subject != "" && !c.Admin }

// isUID reports whether s is a uid: a UUID in its canonical form
// (8-4-4-4-12 hexadecimal digits), as the port validates uids.
func isUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		default:
			return false
		}
	}
	return true
}

// CreateProfile creates a profile with a new uid. Fields are validated by
// the port before the command is built.
type CreateProfile struct {
	// UID of the new profile (see NewProfileUID); empty means a new one
	// from NewID. It is picked before the command runs, because it decides
	// which instance owns the new profile.
	UID string
	// Idempotent marks a UID derived from the client's Idempotency-Key: if
	// the profile exists, the command returns it instead of failing, as long
	// as it was created with the same username, display name and email.
	Idempotent bool
	Username   string
	// DisplayName is optional; empty means the username.
	DisplayName string
	Email       string
	// Async skips waiting for readers to see the new profile.
	Async bool
	// Caller must be an admin, or have UID as its subject.
	Caller Caller
	// RequestID names the request across forwards (see write.requestID).
	RequestID string
}

// CreateProfileHandler handles CreateProfile.
type CreateProfileHandler struct{ Deps }

// Handle appends ProfileCreated for a fresh uid. A uid that already has a
// history is refused (events.ErrAlreadyExists), and so is a caller that may
// not act on the uid (ErrNotOwner).
func (h CreateProfileHandler) Handle(ctx context.Context, cmd CreateProfile) (Result, error) {
	uid := cmd.UID
	if uid == "" {
		uid = h.NewID()
	}
	if err := cmd.Caller.mayActOn(uid); err != nil {
		return Result{}, err
	}
	displayName := cmd.DisplayName
	if displayName == "" {
		displayName = cmd.Username
	}
	want := events.ProfileCreated{Username: cmd.Username, DisplayName: displayName, Email: cmd.Email}
	replayed := false
	w := write{uid: uid, requestID: cmd.RequestID, async: cmd.Async,
		applied: func(_ events.Profile, v int64, at time.Time) events.Profile {
			// The creation as it was applied: the request's own fields.
			return events.Profile{UID: uid, Username: want.Username, DisplayName: want.DisplayName, Email: want.Email,
				Version: v, CreatedAt: at, UpdatedAt: at}
		}}
	w.decide = func(cur events.Profile) ([]events.Payload, error) {
		if cmd.Idempotent && cur.Version > 0 {
			if cur.Deleted {
				// Whatever the body: the state keeps nothing personal of
				// a deleted profile, its creation payload included.
				return nil, ErrIdempotencyGone
			}
			first, ok, err := h.States.CreatedWith(uid)
			if err != nil {
				return nil, err
			}
			if !ok || first != want {
				return nil, ErrIdempotencyMismatch
			}
			replayed = true
			return nil, nil
		}
		return []events.Payload{want}, nil
	}
	res, err := h.execute(ctx, w)
	res.Replayed = replayed
	return res, err
}
