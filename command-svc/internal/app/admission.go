package app

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// ErrOverloaded: the instance already has as many writes in flight as its
// Admission allows. The write was refused before it did anything: it took
// no lock, made no claim and appended nothing, so it is safe to send again
// (after the Retry-After the port answers with).
var ErrOverloaded = errors.New("too many writes in flight")

// Admitter admits a write, or refuses it at once with ErrOverloaded.
// release gives the write's place back; calling it more than once is
// harmless. Deps.execute admits every command, so the bound holds for
// POST, PUT and DELETE alike, and wherever they came from: the owner of a
// profile's partition runs its commands, also those another instance
// forwarded to it.
type Admitter interface {
	Admit() (release func(), err error)
}

// Admission bounds the writes one instance has in flight. A write is in
// flight from the moment it is admitted, before it waits for its
// profile's lock, while it is decided, claims its email, and is queued
// for and committed in a transaction of the event log (group commit), until
// its last append is over, whatever its outcome. Then it gives its place
// back; the wait for readers that follows (VISIBILITY_TIMEOUT) is not
// counted, since it holds nothing of the event log.
//
// What holds:
//
//   - at most Limit writes are in flight at once;
//   - a write beyond the limit is refused at once (ErrOverloaded): it
//     never waits for a place, and never reaches the event log;
//   - a write refused is not counted, and every admitted write gives its
//     place back exactly once (its release is idempotent).
//
// So an admitted write finds at most Limit-1 writes ahead of it in the
// group commit, and the time it can wait for the event log is bounded by
// the time the instance takes to append Limit writes, instead of growing
// with the burst until APPEND_TIMEOUT answers 503 after the fact.
//
// The email claims that other instances ask for (POST /internal/claims)
// are not admitted here: each serves a write admitted by its instance,
// one at a time, so the other instances' limits bound them, and refusing
// one would throw away a write that was already admitted.
//
// A Limit of 0 or less admits every write, and still counts them.
type Admission struct {
	limit    int64
	inFlight atomic.Int64
}

// NewAdmission returns an Admission of at most limit writes in flight
// (unbounded when limit is 0 or less).
func NewAdmission(limit int) *Admission {
	return &Admission{limit: int64(max(limit, 0))}
}

// Admit admits a write when fewer than Limit are in flight, and returns
// the function that gives its place back; otherwise it returns
// ErrOverloaded, and nothing changes.
func (a *Admission) Admit() (release func(), err error) {
	for {
		n := a.inFlight.Load()
		if a.limit > 0 && n >= a.limit {
			return nil, fmt.Errorf("%w: %d of %d", ErrOverloaded, n, a.limit)
		}
		if a.inFlight.CompareAndSwap(n, n+1) {
			break
		}
	}
	var released atomic.Bool
	return func() {
		if released.CompareAndSwap(false, true) {
			a.inFlight.Add(-1)
		}
	}, nil
}

// Limit returns the most writes admitted at once (0: no limit).
func (a *Admission) Limit() int { return int(a.limit) }

// InFlight returns the writes admitted and not released now.
func (a *Admission) InFlight() int { return int(a.inFlight.Load()) }

// admit admits a write by d.Admission; without one, every write is
// admitted.
func (d Deps) admit() (release func(), err error) {
	if d.Admission == nil {
		return func() {}, nil
	}
	return d.Admission.Admit()
}
