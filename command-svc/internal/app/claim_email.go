package app

import (
	"context"
	"fmt"
	"sync"
	"time"

	"profiles/events"
)

// ClaimStore is the claims of the email partitions this instance owns.
type ClaimStore interface {
	Claim(email string) (events.Claim, bool, error)
	ClaimSeq(email string) (int64, error)
	PutClaim(email string, c events.Claim) error
	Lock(key string) (unlock func())
}

// ClaimLog writes claim records (see adapters.TxnEventLog.WriteClaim).
type ClaimLog interface {
	WriteClaim(ctx context.Context, email string, c events.Claim) error
}

// ProfileLookup returns the current state of any profile, from the owner of
// its partition.
type ProfileLookup interface {
	Profile(ctx context.Context, uid string) (events.Profile, error)
}

// ClaimEmail claims an email for a profile. Email is the email's key
// (ClaimEmailHandler.EmailKey of the email). It runs on the
// owner of the key's partition.
type ClaimEmail struct {
	Email string
	UID   string
}

// ClaimEmailHandler handles ClaimEmail and ReleaseEmail.
type ClaimEmailHandler struct {
	Claims ClaimStore
	// Writer writes the claim records.
	Writer ClaimLog
	Lookup ProfileLookup
	Lease  time.Duration
	// Ages measures the lease of every claim this instance finds
	// contested, on its own monotonic clock (never nil).
	Ages *ClaimAges
	// Now is the wall clock that stamps a claim's ClaimedAt (for people
	// and logs; the lease never compares it).
	Now func() time.Time
	// EmailKey is what ClaimEmail.Email was made with (pii.Codec).
	EmailKey events.EmailKeyer
}

// Handle writes a claim of cmd.Email for cmd.UID in a transaction of its
// own, or returns ErrEmailTaken when another profile holds the email, or
// claimed it less than a lease ago. It serves the claims that other
// instances send.
func (h ClaimEmailHandler) Handle(ctx context.Context, cmd ClaimEmail) error {
	hold, err := h.Hold(ctx, cmd)
	if err != nil {
		return err
	}
	if len(hold.Records) == 0 {
		hold.Done(true)
		return nil
	}
	r := hold.Records[0]
	err = h.Writer.WriteClaim(ctx, r.Email, r.Claim)
	hold.Done(err == nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrAppend, err)
	}
	return nil
}

// Hold decides the claim of cmd.Email for cmd.UID without writing it: it
// returns ErrEmailTaken as Handle does, or a Hold whose Records are the
// claim record to write (none when cmd.UID holds the claim already). The
// email stays locked until the Hold is Done, which records the claim if
// it was written. A command that owns the email's partition writes the
// record with its events, in one transaction.
func (h ClaimEmailHandler) Hold(ctx context.Context, cmd ClaimEmail) (Hold, error) {
	unlock := h.Claims.Lock("email:" + cmd.Email)
	cur, ok, err := h.Claims.Claim(cmd.Email)
	if err != nil {
		unlock()
		return Hold{}, err
	}
	if ok && cur.UID == cmd.UID {
		unlock()
		return Hold{}, nil
	}
	if ok {
		holder, err := h.Lookup.Profile(ctx, cur.UID)
		if err != nil {
			unlock()
			return Hold{}, fmt.Errorf("%w: cannot check the holder of the claim: %v", ErrAppend, err)
		}
		if holder.Exists() && h.EmailKey.EmailKey(holder.Email) == cmd.Email {
			unlock()
			return Hold{}, fmt.Errorf("%w: %s", ErrEmailTaken, cmd.Email)
		}
		// The lease is measured from when this instance first saw the
		// claim contested, on its monotonic clock, never from ClaimedAt:
		// that is another reading of a wall clock (maybe another
		// machine's), and a clock stepped forward would let a claim still
		// being appended be taken over, giving two live profiles one
		// email. A claim that is stale indeed waits one lease more.
		if h.Ages.Age(cmd.Email, cur.Seq) < h.Lease {
			unlock()
			return Hold{}, fmt.Errorf("%w: %s is being claimed", ErrEmailTaken, cmd.Email)
		}
		// A stale claim: its profile never got, or no longer has, the email.
	}
	seq, err := h.Claims.ClaimSeq(cmd.Email)
	if err != nil {
		unlock()
		return Hold{}, err
	}
	c := events.Claim{UID: cmd.UID, ClaimedAt: h.Now().UTC(), Seq: seq + 1}
	var once sync.Once
	return NewHold([]ClaimRecord{{Email: cmd.Email, Claim: c}}, func(written bool) {
		once.Do(func() {
			if written {
				// A store that cannot take it leaves the claim to the
				// fold of the claims topic; until then the next claim of
				// the email is refused as stale (TxnEventLog checks the
				// sequence), never written twice.
				_ = h.Claims.PutClaim(cmd.Email, c)
			}
			unlock()
		})
	}), nil
}

// Release removes uid's claim on email, if it still holds it.
func (h ClaimEmailHandler) Release(ctx context.Context, email, uid string) error {
	unlock := h.Claims.Lock("email:" + email)
	defer unlock()
	cur, ok, err := h.Claims.Claim(email)
	if err != nil || !ok || cur.UID != uid {
		return err
	}
	c := events.Claim{UID: uid, Seq: cur.Seq + 1, Released: true}
	if err := h.Writer.WriteClaim(ctx, email, c); err != nil {
		return fmt.Errorf("%w: %w", ErrAppend, err)
	}
	return h.Claims.PutClaim(email, c)
}

// ClaimAges remembers when this instance first found each contested claim
// (an email claimed by a profile that does not hold it: its command may
// still be appending, or it died), by monotonic clock. A claim may be
// taken over only once it has been known for a whole lease, so no wall
// clock, stepped or skewed, can shorten the lease. It keeps at most max
// claims and forgets the oldest first; a forgotten claim starts over,
// which only delays its takeover. It is safe for concurrent use.
type ClaimAges struct {
	max int
	now func() time.Time // time.Now; tests change it

	mu   sync.Mutex
	seen map[claimID]time.Time
}

type claimID struct {
	email string
	seq   int64
}

// NewClaimAges returns a ClaimAges that keeps at most max claims.
func NewClaimAges(max int) *ClaimAges {
	return &ClaimAges{max: max, now: time.Now, seen: map[claimID]time.Time{}}
}

// NewClaimAgesWithClock is NewClaimAges on the monotonic clock now (tests).
func NewClaimAgesWithClock(max int, now func() time.Time) *ClaimAges {
	a := NewClaimAges(max)
	a.now = now
	return a
}

// Age returns how long this instance has known claim seq of email, 0 the
// first time it is asked.
func (a *ClaimAges) Age(email string, seq int64) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	id := claimID{email, seq}
	if t, ok := a.seen[id]; ok {
		return now.Sub(t)
	}
	if len(a.seen) >= a.max {
		var oldest claimID
		first := true
		for k, t := range a.seen {
			if first || t.Before(a.seen[oldest]) {
				oldest, first = k, false
			}
		}
		delete(a.seen, oldest)
	}
	a.seen[id] = now
	return 0
}
