// Package app holds command-svc's use cases, one per file. Each checks a
// command against the current state with events.Apply, appends the
// resulting events to the log, and (unless asked not to) waits until
// readers can see them. The interfaces the use cases need are declared here.
package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"profiles/events"
)

// Errors returned by the use cases. Check them with errors.Is.
var (
	// ErrNotFound: no live profile with that uid (never created, or deleted).
	ErrNotFound = errors.New("profile not found")
	// ErrAppend: the event log did not accept the event.
	ErrAppend = errors.New("event log unavailable")
	// ErrPrecondition: an If-Match condition did not hold; the error is a
	// *PreconditionError naming the current version.
	ErrPrecondition = errors.New("precondition failed")
	// ErrIdempotencyMismatch: an Idempotency-Key was reused with another request.
	ErrIdempotencyMismatch = errors.New("idempotency key reused with a different request")
	// ErrEmailTaken: another live profile holds the email (or is claiming
	// it right now).
	ErrEmailTaken = errors.New("email address taken")
	// ErrIdempotencyGone: the profile created under an Idempotency-Key has
	// been deleted since.
	ErrIdempotencyGone = errors.New("the profile created with this idempotency key was deleted")
	// ErrNotOwner: the caller may not act on this profile: it is not its
	// own (the uid is not the caller's subject), and the caller is no admin.
	ErrNotOwner = errors.New("not the caller's own profile")
	// ErrNotServing: this instance decided the command on its state, but
	// could not confirm afterwards that it still answers for the profile
	// (it lost the partition, or its lease ran out: see Deps.Serving). The
	// answer might have been stale, so it is not given; nothing was
	// appended.
	ErrNotServing = errors.New("this instance no longer serves the profile")
	// ErrNotVisible: the command was refused on a version of the profile
	// that readers did not show in time. The refusal (a 412 naming that
	// version, a 404 of a delete) would tell the client of a write that a
	// GET does not show yet, so it is not given; nothing was appended.
	ErrNotVisible = errors.New("the refusal names a version readers do not show yet")
	// ErrNotWriter: the event log refused the append before anything of
	// it was written, because this instance does not (or no longer)
	// write the partition: a rebalance moved it, or fenced the
	// transaction. The owner of the partition may be asked again.
	ErrNotWriter = errors.New("this instance is not the writer of the partition")
)

// Caller is who asks for a command, as the HTTP port authenticated it (a
// token's sub and whether it holds profiles:admin). A caller that is no
// admin may create, change and delete only the profile whose uid is its
// Subject. The zero Caller may do nothing.
type Caller struct {
	Subject string
	Admin   bool
}

// mayActOn returns ErrNotOwner unless c may act on uid. It is checked
// before the profile's state is read, so a refusal says nothing about
// whether the profile exists.
func (c Caller) mayActOn(uid string) error {
	if c.Admin || (c.Subject != "" && c.Subject == uid) {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrNotOwner, uid)
}

// PreconditionError is returned when If-Match does not match.
type PreconditionError struct{ Current int64 }

func (e *PreconditionError) Error() string {
	return fmt.Sprintf("%v: the current version is %d", ErrPrecondition, e.Current)
}

// Unwrap makes errors.Is(err, ErrPrecondition) hold.
func (e *PreconditionError) Unwrap() error { return ErrPrecondition }

// IfMatch is an If-Match condition (RFC 9110): the command applies only if
// the profile's current version is one of Versions, or, with Any, if the
// profile exists. The zero value is no condition.
type IfMatch struct {
	Any      bool
	Versions []int64
	Set      bool
}

// check returns a *PreconditionError unless cur satisfies the condition.
func (m IfMatch) check(cur events.Profile) error {
	if !m.Set || m.Any {
		return nil
	}
	for _, v := range m.Versions {
		if v == cur.Version {
			return nil
		}
	}
	return &PreconditionError{Current: cur.Version}
}

// States is the current state of the profiles this instance owns, with
// per-profile locks. The routing layer runs a command only on the owner of
// its uid's partition, once the owner has caught up with that partition.
type States interface {
	Get(uid string) (events.Profile, error)
	Apply(e events.Event) error
	Lock(uid string) (unlock func())
	// CreatedWith returns the payload a profile was created with, for
	// profiles created under an Idempotency-Key.
	CreatedWith(uid string) (events.ProfileCreated, bool, error)
	// Applied returns the version and time of the last event of the write
	// of uid that requestID names, if the state holds it.
	Applied(uid, requestID string) (version int64, at time.Time, ok bool, err error)
}

// EventLog appends events durably, in order, keyed by profile uid.
type EventLog interface {
	// Append writes es (all of one profile) and claims in one
	// transaction: all of them or none.
	Append(ctx context.Context, claims []ClaimRecord, es ...events.Event) error
}

// ClaimRecord is a claim record to write: Claim under the email's key
// Email (a tombstone when Claim is released).
type ClaimRecord struct {
	Email string
	Claim events.Claim
}

// Visibility waits until readers see a profile at a version (or later),
// both by uid and in the email index under each of emails (holding the
// email, or no longer holding it).
type Visibility interface {
	WaitVisible(ctx context.Context, uid string, version int64, emails []string) error
}

// EmailClaims secures an email for a profile before the event that gives
// it the email, and lets it go after the event that takes it away. Both
// run on the owner of the email's partition, wherever that is.
type EmailClaims interface {
	// Claim secures email for uid, or returns ErrEmailTaken if another
	// live profile holds it. The Hold it returns must be Done.
	Claim(ctx context.Context, email, uid string) (Hold, error)
	// Release removes uid's claim on email, if it still has one.
	Release(ctx context.Context, email, uid string) error
}

// Hold is a claim that EmailClaims.Claim granted. On the owner of the
// email's partition the claim is not written yet: Records holds its
// record, which the command writes in the transaction of its events (so
// that the claim and the event are one, and no crash can come between
// them), and the email stays locked until Done. A claim made on another
// instance was written there in a transaction of its own, and has no
// Records. Done(written) must be called once, after the append: written
// reports that Records are in the log. The zero Hold is a written claim.
type Hold struct {
	Records []ClaimRecord
	done    func(written bool)
}

// NewHold returns a Hold of records whose Done calls done.
func NewHold(records []ClaimRecord, done func(written bool)) Hold {
	return Hold{Records: records, done: done}
}

// Done settles the hold (see Hold).
func (h Hold) Done(written bool) {
	if h.done != nil {
		h.done(written)
	}
}

// Result is what a command returns.
type Result struct {
	// Profile is the state after the command (Deleted set after a delete).
	Profile events.Profile
	// Visible reports that readers already see Profile. It is false when the
	// command asked not to wait, or when the view did not catch up in time;
	// the events are in the log either way.
	Visible bool
	// Replayed reports that a POST with an Idempotency-Key had already
	// created the profile; nothing new was created.
	Replayed bool
}

// Deps are the collaborators every use case needs.
type Deps struct {
	States States
	// Events is the event log the commands append to.
	Events     EventLog
	Visibility Visibility
	// Claims makes emails unique among live profiles.
	Claims EmailClaims
	// ClaimLease is how long a claim whose profile does not hold its email
	// is protected (the command that claimed it may still be appending).
	// A command that cannot append within half of it gives up.
	ClaimLease time.Duration
	// Admission bounds the writes in flight on this instance (see
	// Admission); nil admits every write.
	Admission Admitter
	// Serving reports whether this instance still answers for uid: it owns
	// uid's partition, has caught up with it, and holds its lease in the
	// group. An outcome decided on the state without an append (404, 412,
	// a change to nothing, a replay) is given only if Serving holds after
	// the decision; an append is fenced by Kafka instead. nil means always.
	Serving func(uid string) bool
	// AfterClaim, if set, runs between a successful claim and the append:
	// a fault hook for tests (a crash at the worst moment).
	AfterClaim func()
	// NewID returns a new unique id (a UUID) for a profile or an event.
	NewID func() string
	// Now returns the wall-clock time that stamps events (clock.Now);
	// nothing measures elapsed time with it.
	Now func() time.Time
}

// write is one command, as execute runs it.
type write struct {
	uid string
	// requestID names the request across the routing layer's forwards
	// (routing.HeaderRequestID); "" for one that was not forwarded. The
	// command's last event carries it as its id.
	requestID string
	async     bool
	// decide turns the current state into the payloads to append (none
	// is fine), or refuses the command.
	decide func(events.Profile) ([]events.Payload, error)
	// applied returns the state right after this command, for a request
	// the log already holds: its last event had version v and time at,
	// and cur is the state now. nil: such a request is run again.
	applied func(cur events.Profile, v int64, at time.Time) events.Profile
}

// execute runs one command on w.uid under its lock: decide turns the
// current state into the payloads to append, and the events are checked
// with Apply, appended, and folded into the state. A request that the log
// already holds (it was sent again after its first owner applied it and
// stopped answering) is answered as it was applied, not applied twice.
//
// The command is admitted first (d.Admission), before it waits for the
// lock, or refused with ErrOverloaded having done nothing. It holds its
// place until its appends are over, not while it waits for readers.
func (d Deps) execute(ctx context.Context, w write) (Result, error) {
	uid, async := w.uid, w.async
	release, err := d.admit()
	if err != nil {
		return Result{}, err
	}
	defer release()
	// A refusal waits for readers after the lock is given back: the
	// profile's other commands need not wait behind it.
	unlock := sync.OnceFunc(d.States.Lock(uid))
	defer unlock()

	state, err := d.States.Get(uid)
	if err != nil {
		return Result{}, err
	}
	if w.requestID != "" && w.applied != nil {
		v, at, ok, err := d.States.Applied(uid, w.requestID)
		if err != nil {
			return Result{}, err
		}
		if ok {
			release()
			if err := d.confirm(uid); err != nil {
				return Result{}, err
			}
			res := Result{Profile: w.applied(state, v, at)}
			if !async {
				res.Visible = d.Visibility.WaitVisible(ctx, uid, v, touchedEmails(events.Profile{}, res.Profile)) == nil
			}
			return res, nil
		}
	}
	payloads, err := w.decide(state)
	if err != nil {
		release()
		unlock()
		if cerr := d.confirm(uid); cerr != nil {
			return Result{}, cerr
		}
		if verr := d.refusalVisible(ctx, uid, state, async); verr != nil {
			return Result{}, verr
		}
		return Result{}, err
	}
	next := state
	var es []events.Event
	for i, data := range payloads {
		id := d.NewID()
		if i == len(payloads)-1 && w.requestID != "" {
			id = w.requestID
		}
		e := events.New(id, next, uid, data, d.Now())
		if next, err = events.Apply(next, e); err != nil {
			return Result{}, err
		}
		es = append(es, e)
	}
	if len(es) == 0 {
		release()
		if err := d.confirm(uid); err != nil {
			return Result{}, err
		}
		// Nothing to append; the state may still be invisible if the write
		// that made it asked not to wait.
		res := Result{Profile: state}
		if !async {
			res.Visible = d.Visibility.WaitVisible(ctx, uid, state.Version, touchedEmails(events.Profile{}, state)) == nil
		}
		return res, nil
	}
	claim, lost := emailChange(state, next)
	var hold Hold
	if claim != "" {
		claimed := time.Now() // monotonic: Now is the wall clock
		if hold, err = d.Claims.Claim(ctx, claim, uid); err != nil {
			return Result{}, err
		}
		if len(hold.Records) == 0 {
			// Written apart from the event: the lease protects it until
			// the event is in the log, so the append must come in time.
			if d.AfterClaim != nil {
				d.AfterClaim()
			}
			if time.Since(claimed) > d.ClaimLease/2 {
				return Result{}, fmt.Errorf("%w: the email claim took too long; try again", ErrAppend)
			}
		}
	}
	// All events of one command, and its claim when this instance owns
	// the email, are one transaction.
	err = d.Events.Append(ctx, hold.Records, es...)
	hold.Done(err == nil)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrAppend, err)
	}
	for _, e := range es {
		if err := d.States.Apply(e); err != nil {
			return Result{}, err
		}
	}
	if lost != "" {
		// Best effort: a claim left behind is stale (its profile no longer
		// holds the email) and is taken over after the lease.
		_ = d.Claims.Release(ctx, lost, uid)
	}
	release()
	res := Result{Profile: next}
	if !async {
		res.Visible = d.Visibility.WaitVisible(ctx, uid, next.Version, touchedEmails(state, next)) == nil
	}
	return res, nil
}

// confirm returns ErrNotServing unless this instance still serves uid
// (Deps.Serving).
func (d Deps) confirm(uid string) error {
	if d.Serving == nil || d.Serving(uid) {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrNotServing, uid)
}

// refusalVisible waits, unless async, until readers show the state a
// refusal was decided on, so that no client learns of a version (from a
// 412's ETag, or a 404 after a delete) before a GET can show it. It
// returns ErrNotVisible if they do not within the visibility wait.
func (d Deps) refusalVisible(ctx context.Context, uid string, state events.Profile, async bool) error {
	if async || state.Version == 0 {
		return nil
	}
	if err := d.Visibility.WaitVisible(ctx, uid, state.Version, touchedEmails(events.Profile{}, state)); err != nil {
		return fmt.Errorf("%w: version %d of %s: %v", ErrNotVisible, state.Version, uid, err)
	}
	return nil
}

// executeLive runs a command on an existing profile: caller must be allowed
// to act on w.uid (else ErrNotOwner), and under its lock the profile must be
// live (else ErrNotFound) and match ifMatch (else a *PreconditionError)
// before decide turns it into the payloads to append.
func (d Deps) executeLive(ctx context.Context, caller Caller, ifMatch IfMatch, w write, decide func(events.Profile) []events.Payload) (Result, error) {
	if err := caller.mayActOn(w.uid); err != nil {
		return Result{}, err
	}
	w.decide = func(cur events.Profile) ([]events.Payload, error) {
		if err := requireLive(w.uid, cur); err != nil {
			return nil, err
		}
		if err := ifMatch.check(cur); err != nil {
			return nil, err
		}
		return decide(cur), nil
	}
	return d.execute(ctx, w)
}

// emailChange returns the normalized email the step from prev to next
// claims, and the one it lets go ("" for none): the email index delta.
func emailChange(prev, next events.Profile) (claim, release string) {
	return events.EmailDelta(prev, next)
}

// touchedEmails returns the normalized emails whose index entry for the
// profile changes from prev to next: the one it holds now, and the one it
// no longer holds.
func touchedEmails(prev, next events.Profile) []string {
	var out []string
	if next.Exists() {
		out = append(out, events.NormalizeEmail(next.Email))
	}
	if _, lost := events.EmailDelta(prev, next); lost != "" {
		out = append(out, lost)
	}
	return out
}

// requireLive returns ErrNotFound unless p is a live profile.
func requireLive(uid string, p events.Profile) error {
	if !p.Exists() {
		return fmt.Errorf("%w: %s", ErrNotFound, uid)
	}
	return nil
}
