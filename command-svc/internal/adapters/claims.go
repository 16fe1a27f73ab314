package adapters

import (
	"context"
	"errors"
	"fmt"
	"time"

	"profiles/command-svc/internal/app"
	"profiles/events"
	"profiles/platform/peer"
	"profiles/platform/routing"
)

// Peers makes email claims and profile lookups on the owner of the key's
// partition (an email's key for a claim, a uid for a lookup). It
// implements app.EmailClaims and app.ProfileLookup.
//
// When the routing table says, now, that this instance serves the
// partition, the call runs in process (Claims, States). Otherwise it goes
// over HTTP to this instance's own internal endpoint (SelfURL), whose
// routing wrapper forwards it to the owner in one hop, as for any request:
// that keeps routing's safety net in one place (the wait while no instance
// owns the partition or the owner catches up, the retry while the owner
// cannot be dialed, the watch on an owner that loses the partition), which
// a direct call to the owner would have to repeat.
//
// Locks: a claim runs while its command holds the lock of its profile's
// uid, and takes the lock of "email:"+key (app.ClaimEmailHandler); the
// lookup of a claim's holder that it makes reads States without a lock.
// No path takes a uid's lock while holding an email's, so the in-process
// call cannot deadlock with the command that makes it.
//
// Set every field before use; Peers is safe for concurrent use.
type Peers struct {
	// Router tells whether this instance serves a partition (asked with a
	// done context: from what it knows now, without waiting).
	Router      routing.Router
	PartitionOf func(key string) int32
	// EmailKey turns an email into its claim's key.
	EmailKey events.EmailKeyer
	// Claims runs the claims of the email partitions this instance owns,
	// States answers for its profiles.
	Claims interface {
		Hold(context.Context, app.ClaimEmail) (app.Hold, error)
		Release(ctx context.Context, email, uid string) error
	}
	States peer.States
	// SelfURL is this instance's base URL, and Client calls it.
	SelfURL string
	Client  peer.Client
	// Timeout bounds one claim or release, in process or not (0: none).
	Timeout time.Duration
}

// lookupTimeout bounds one profile lookup.
const lookupTimeout = 20 * time.Second

// serves reports whether this instance serves the partition of key now.
func (c *Peers) serves(ctx context.Context, key string) bool {
	now, cancel := context.WithCancel(ctx)
	cancel()
	_, self, err := c.Router.Route(now, c.PartitionOf(key))
	return err == nil && self
}

// Claim claims email (normalized) for uid on the owner of its key's
// partition; ErrEmailTaken if another live profile holds it. When that is
// this instance, the claim is held, not written: the command writes its
// record with its events (see app.Hold).
func (c *Peers) Claim(ctx context.Context, email, uid string) (app.Hold, error) {
	return c.claim(ctx, email, uid, false)
}

// Release drops uid's claim on email (normalized) on the owner of its
// key's partition.
func (c *Peers) Release(ctx context.Context, email, uid string) error {
	_, err := c.claim(ctx, email, uid, true)
	return err
}

func (c *Peers) claim(ctx context.Context, email, uid string, release bool) (app.Hold, error) {
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	if key := c.EmailKey.EmailKey(email); c.serves(ctx, key) {
		if release {
			return app.Hold{}, c.Claims.Release(ctx, key, uid)
		}
		hold, err := c.Claims.Hold(ctx, app.ClaimEmail{Email: key, UID: uid})
		if errors.Is(err, app.ErrEmailTaken) {
			return app.Hold{}, fmt.Errorf("%w: for %s", app.ErrEmailTaken, uid) // never the key
		}
		return hold, err
	}
	req := peer.ClaimRequest{Email: email, UID: uid}
	var err error
	if release {
		err = c.Client.Release(ctx, c.SelfURL, req)
	} else {
		err = c.Client.Claim(ctx, c.SelfURL, req)
	}
	var se *peer.StatusError
	switch {
	case err == nil:
		return app.Hold{}, nil
	case errors.Is(err, peer.ErrClaimTaken):
		return app.Hold{}, fmt.Errorf("%w: for %s", app.ErrEmailTaken, uid)
	case errors.As(err, &se):
		return app.Hold{}, fmt.Errorf("%w: email claim for %s: %s %s", app.ErrAppend, uid, se.Status, se.Body)
	default:
		return app.Hold{}, fmt.Errorf("%w: email claim for %s: %v", app.ErrAppend, uid, err) // never the email: errors are logged
	}
}

// Profile returns the current state of uid from the owner of its partition.
func (c *Peers) Profile(ctx context.Context, uid string) (events.Profile, error) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	if c.serves(ctx, uid) {
		return c.States.Get(uid)
	}
	return c.Client.Profile(ctx, c.SelfURL, uid)
}
