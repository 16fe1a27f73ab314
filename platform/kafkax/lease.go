package kafkax

import (
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
)

// A lease bounds how long a member may act on the partitions of its
// session on its own authority. The group coordinator expels a member only
// after SessionTimeout without a heartbeat, and a new generation cannot
// complete without this member rejoining or being expelled. So while less
// than SessionTimeout has passed since this member *sent* a heartbeat that
// the coordinator accepted for its generation, no other member can own its
// partitions. A member that was frozen (SIGSTOP, a long GC pause, a VM
// migration) wakes up with its lease run out, and answers for nothing
// until a heartbeat is accepted again: it never serves from a state that
// another owner may have moved past. Times are monotonic, so a wall-clock
// jump neither extends nor ends a lease.
//
// The zero lease has run out. It is not safe for concurrent use; Group
// guards it with its mutex.
type lease struct {
	// length is the part of the session timeout a lease lasts, with a
	// margin for the coordinator's clock running faster than ours.
	length time.Duration
	until  time.Time
}

// leaseFraction is the part of the session timeout a lease lasts.
const leaseFraction = 0.8

func newLease(sessionTimeout time.Duration) lease {
	return lease{length: time.Duration(float64(sessionTimeout) * leaseFraction)}
}

// held reports whether the lease holds at now.
func (l lease) held(now time.Time) bool { return now.Before(l.until) }

// renew extends the lease after the coordinator accepted a heartbeat sent
// at sent, and reports whether it had run out before (at now). A late
// answer to an older heartbeat never shortens it.
func (l *lease) renew(sent, now time.Time) (wasOut bool) {
	wasOut = !l.held(now)
	if until := sent.Add(l.length); until.After(l.until) {
		l.until = until
	}
	return wasOut
}

// end makes the lease run out at once (the session ended).
func (l *lease) end() { l.until = time.Time{} }

// renewLease sends one heartbeat for the current session, and renews the
// lease if the coordinator accepts it. A refusal (a rebalance in
// progress, a newer generation, an unknown member) or no answer leaves
// the lease to run out; sarama's own heartbeats end the session then.
func (g *Group) renewLease() {
	g.mu.Lock()
	gen, member, in := g.generation, g.memberID, g.inSession || g.detached
	g.mu.Unlock()
	if !in {
		return
	}
	sent := time.Now()
	g.mu.Lock()
	g.heartbeatSent = sent
	g.mu.Unlock()
	err := g.heartbeat(gen, member)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.heartbeatSent = time.Time{}
	var refused sarama.KError
	g.coordinatorSilent = err != nil && !errors.As(err, &refused)
	if err != nil {
		if g.lease.held(time.Now()) || !g.leaseFailing {
			g.log.Warn("group coordinator did not renew this member's lease", "group", g.opts.Group, "generation", gen, "err", err)
		}
		// The generation is over (a rebalance began, or the coordinator no
		// longer knows it): end the session now, so that the member
		// rejoins at once instead of at sarama's next heartbeat, up to a
		// heartbeat interval later. The partitions are lost either way.
		if rejoinNow(err) && g.inSession && g.generation == gen && g.memberID == member && g.endSession != nil {
			g.endSession()
		}
		g.leaseFailing = true
		return
	}
	g.leaseFailing = false
	if (g.inSession || g.detached) && g.generation == gen && g.memberID == member {
		if g.lease.renew(sent, time.Now()) {
			g.notifyLocked()
		}
	}
}

// rejoinNow reports whether a refused heartbeat means that this member's
// generation is over and it must join the group again.
func rejoinNow(err error) bool {
	return errors.Is(err, sarama.ErrRebalanceInProgress) || errors.Is(err, sarama.ErrIllegalGeneration) || errors.Is(err, sarama.ErrUnknownMemberId)
}

// coordinatorSilentLocked reports whether the group coordinator has not
// answered this member lately: the last heartbeat got no answer at all, or
// one has waited for its answer longer than silentAfter. A coordinator that
// answers, even with a refusal, is reachable.
func (g *Group) coordinatorSilentLocked(now time.Time) bool {
	return g.coordinatorSilent || (!g.heartbeatSent.IsZero() && now.Sub(g.heartbeatSent) > silentAfter)
}

// silentAfter is how long a heartbeat may wait for its answer before the
// coordinator counts as silent. It answers in milliseconds when it can.
const silentAfter = time.Second

// heartbeat sends the coordinator a heartbeat of generation gen for
// member, with this instance's static id, as sarama's own heartbeats do.
func (g *Group) heartbeat(gen int32, member string) error {
	coord, err := g.client.Coordinator(g.opts.Group)
	if err != nil {
		return err
	}
	req := &sarama.HeartbeatRequest{GroupId: g.opts.Group, GenerationId: gen, MemberId: member}
	v := g.client.Config().Version
	switch {
	case v.IsAtLeast(sarama.V2_4_0_0):
		req.Version = 4
	case v.IsAtLeast(sarama.V2_3_0_0):
		req.Version = 3
	case v.IsAtLeast(sarama.V2_0_0_0):
		req.Version = 2
	case v.IsAtLeast(sarama.V0_11_0_0):
		req.Version = 1
	}
	if req.Version >= 3 && g.opts.InstanceID != "" {
		id := g.opts.InstanceID
		req.GroupInstanceId = &id
	}
	resp, err := coord.Heartbeat(req)
	if err != nil {
		_ = g.client.RefreshCoordinator(g.opts.Group)
		return err
	}
	if resp.Err != sarama.ErrNoError {
		if resp.Err == sarama.ErrNotCoordinatorForConsumer || resp.Err == sarama.ErrConsumerCoordinatorNotAvailable {
			_ = g.client.RefreshCoordinator(g.opts.Group)
		}
		return fmt.Errorf("heartbeat of generation %d: %w", gen, resp.Err)
	}
	return nil
}
