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
//
// It waits for the answer at most silentAfter. A coordinator that does
// not answer (its broker is frozen, or cut off from us) would hold the
// heartbeat until the client's read timeout (30 s), and every renewal
// after it, although the group may have moved to another broker, which
// the controller does once it fences the silent one (a few seconds). So
// after silentAfter the coordinator is looked up again in the background
// (lookUpCoordinator), and the next renewal sends its heartbeat to the
// coordinator found then; at most one heartbeat waits on each broker. A
// late answer renews the lease from when its heartbeat was sent, as any
// answer does.
func (g *Group) renewLease() {
	g.mu.Lock()
	gen, member, in := g.generation, g.memberID, g.inSession || g.detached
	g.mu.Unlock()
	if !in {
		return
	}
	coord, err := g.coordinator()
	if err != nil {
		g.leaseAnswered(time.Now(), gen, member, err)
		return
	}
	sent := time.Now()
	g.mu.Lock()
	if g.heartbeatWaiting[coord.ID()] {
		// A heartbeat already waits on this broker: another would wait
		// behind it.
		g.mu.Unlock()
		g.lookUpCoordinator(coord.ID())
		return
	}
	if g.heartbeatWaiting == nil {
		g.heartbeatWaiting = map[int32]bool{}
	}
	g.heartbeatWaiting[coord.ID()] = true
	g.heartbeatSent = sent
	g.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := g.heartbeat(coord, gen, member)
		g.mu.Lock()
		delete(g.heartbeatWaiting, coord.ID())
		var refused sarama.KError
		if err != nil && g.coordinatorFoundSet && g.coordinatorFound == coord.ID() && (!errors.As(err, &refused) || refused == sarama.ErrNotCoordinatorForConsumer) {
			g.coordinatorFoundSet = false // it was wrong, or went silent too: back to the client's
		}
		g.mu.Unlock()
		g.leaseAnswered(sent, gen, member, err)
	}()
	select {
	case <-done:
	case <-time.After(silentAfter):
		g.lookUpCoordinator(coord.ID())
	}
}

// coordinator returns the broker that lease heartbeats go to: the one a
// lookup found after the client's went silent (see lookUpCoordinator),
// until the client's cache names it too, and else the client's.
func (g *Group) coordinator() (*sarama.Broker, error) {
	cached, err := g.client.Coordinator(g.opts.Group)
	g.mu.Lock()
	found, ok := g.coordinatorFound, g.coordinatorFoundSet
	if ok && err == nil && cached.ID() == found {
		g.coordinatorFoundSet = false
	}
	g.mu.Unlock()
	if ok && (err != nil || cached.ID() != found) {
		if b, berr := g.client.Broker(found); berr == nil {
			return b, nil
		}
	}
	return cached, err
}

// lookUpCoordinator asks every broker but silent, at once and in the
// background, which broker coordinates the group now, and keeps the
// first answer that names another broker for the lease heartbeats; it
// also has the client look its coordinator up again, for sarama's own
// requests. The client's own lookup alone is not enough: it asks the
// least loaded broker it knows, which can be the silent one, and then
// waits for its read timeout (30 s). At most one lookup runs at a time.
func (g *Group) lookUpCoordinator(silent int32) {
	if !g.coordinatorLookup.CompareAndSwap(false, true) {
		return
	}
	brokers := g.client.Brokers()
	version := int16(0)
	switch v := g.client.Config().Version; {
	case v.IsAtLeast(sarama.V2_0_0_0):
		version = 2
	case v.IsAtLeast(sarama.V0_11_0_0):
		version = 1
	}
	go func() {
		defer g.coordinatorLookup.Store(false)
		g.refreshCoordinator()
		answers := make(chan int32, len(brokers))
		asked := 0
		for _, b := range brokers {
			if b.ID() == silent {
				continue
			}
			asked++
			go func() {
				_ = b.Open(g.client.Config()) // ErrAlreadyConnected when it is
				resp, err := b.FindCoordinator(&sarama.FindCoordinatorRequest{
					Version: version, CoordinatorKey: g.opts.Group, CoordinatorType: sarama.CoordinatorGroup,
				})
				if err != nil || resp.Err != sarama.ErrNoError || resp.Coordinator == nil {
					answers <- -1
					return
				}
				answers <- resp.Coordinator.ID()
			}()
		}
		for range asked {
			if id := <-answers; id >= 0 && id != silent {
				g.mu.Lock()
				g.coordinatorFound, g.coordinatorFoundSet = id, true
				g.mu.Unlock()
				return
			}
		}
	}()
}

// leaseAnswered records the answer (err) to the heartbeat of generation
// gen, member, sent at sent: the lease is renewed from sent if it was
// accepted. Only the answer to the latest heartbeat says whether the
// coordinator answers at all (see coordinatorSilentLocked).
func (g *Group) leaseAnswered(sent time.Time, gen int32, member string, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !sent.Before(g.heartbeatSent) {
		g.heartbeatSent = time.Time{}
		var refused sarama.KError
		g.coordinatorSilent = err != nil && !errors.As(err, &refused)
	}
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

// heartbeat sends coord, the group's coordinator, a heartbeat of
// generation gen for member, with this instance's static id, as sarama's own heartbeats do.
func (g *Group) heartbeat(coord *sarama.Broker, gen int32, member string) error {
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
		g.refreshCoordinator()
		return err
	}
	if resp.Err != sarama.ErrNoError {
		if resp.Err == sarama.ErrNotCoordinatorForConsumer || resp.Err == sarama.ErrConsumerCoordinatorNotAvailable {
			g.refreshCoordinator()
		}
		return fmt.Errorf("heartbeat of generation %d: %w", gen, resp.Err)
	}
	return nil
}

// refreshCoordinator has the client look the group's coordinator up
// again, in the background, one lookup at a time. The client asks the
// least loaded broker it knows, which can be a frozen one: a heartbeat
// that waited for that lookup kept its broker marked as waited on (see
// renewLease), so no heartbeat reached the group's new coordinator until
// the frozen broker answered, and the members' sessions there ran out.
func (g *Group) refreshCoordinator() {
	if !g.coordinatorRefresh.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer g.coordinatorRefresh.Store(false)
		_ = g.client.RefreshCoordinator(g.opts.Group)
	}()
}
