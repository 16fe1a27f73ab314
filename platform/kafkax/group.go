package kafkax

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"profiles/platform/internal/loop"
)

// ErrNoOwner is returned by Group.Route when no instance owns a partition
// before the wait ends (the group is rebalancing, or the owner died and its
// session has not expired yet).
var ErrNoOwner = errors.New("no instance owns the partition yet")

// GroupOptions configures a Group.
type GroupOptions struct {
	// Group is the consumer group id, one per service.
	Group string
	// Topics are consumed co-partitioned: Topics[0] is planned with sticky
	// assignment and every other topic follows it partition by partition.
	Topics []string
	// Self is advertised to the other members.
	Self Member
	// InstanceID, if set, makes the membership static (KIP-345): a restart
	// within the session timeout keeps the same partitions without a
	// rebalance, so the instance resumes from its local state.
	InstanceID string
	// SessionTimeout after which a silent member loses its partitions.
	SessionTimeout time.Duration
	// Start returns where to start reading topic/p: the next offset the
	// caller has stored, or sarama.OffsetOldest.
	Start func(topic string, p int32) (int64, error)
	// Assigned is called with every new session (its primary-topic
	// partitions and its generation), before any record of it is handled
	// and before the end offsets its catch-up aims at are read.
	Assigned func(s Session)
	// Handle receives records of one partition in offset order, in batches.
	// Calls for different partitions run concurrently.
	Handle func(ctx context.Context, topic string, p int32, records []*sarama.ConsumerMessage) error
	// MaxBatch bounds a batch; 0 means 1000.
	MaxBatch int
	// Refresh is how often the assignment of the whole group is re-read; 0
	// means one second. It is also re-read at every rebalance.
	Refresh time.Duration
	// Unfit, if set, reports why this instance cannot hold any partition
	// now (its store's disk is full), or nil. It is asked whenever Handle
	// fails: if it names a reason, the instance steps aside (it leaves the
	// group, so that the other members take its partitions over at once)
	// and asks again every second, joining again once it says nil. Without
	// Unfit, or while it says nil, a failing batch is retried in place
	// (see handle), and its partition is not served meanwhile.
	Unfit func() error
	// Prefer, if set, is asked by the member that plans a rebalance (the
	// group's leader) for every partition: which of members (instance IDs,
	// Member.ID) should take p over, nearest first, or nil to leave p to
	// the sticky plan. The plan then swaps partitions that the sticky
	// strategy gave to other members than preferred among themselves, so
	// that the number of partitions of each member, and every partition
	// that stays with its member, are as the sticky plan has them.
	// query-svc prefers, for a partition whose owner left, the members
	// that kept it warm (see follower.Standby.Preferred).
	Prefer func(p int32, members []string) []string
	// Held, if set, returns the next offset of every partition of the
	// primary topic whose state this instance's store holds, owned or not.
	// It is asked before every join, and the member that plans the
	// rebalance swaps partitions between members, keeping every member's
	// count, towards those with the least to read (see heldPlan): an
	// instance that restarts after its partitions went elsewhere gets back
	// those it holds. It is called from the group's goroutine, so it must
	// not wait on the group. An error joins without offsets.
	Held func() (map[int32]int64, error)
}

// Session is one generation of this instance's membership: what the
// group assigned it, and what names the generation to the group
// coordinator. A transaction that commits offsets with a Session's
// metadata (sarama's AddOffsetsToTxnWithGroupMetadata) is rejected once
// the group has moved to a later generation, or has expelled this member:
// that is how Kafka fences a deposed member's writes (KIP-447).
type Session struct {
	// Partitions of the primary topic, in ascending order.
	Partitions []int32
	Generation int32
	MemberID   string
	// InstanceID is the static member id ("" for a dynamic member).
	InstanceID string
}

// GroupMetadata is s as sarama's transactional producer sends it with the
// offsets of a transaction (TxnOffsetCommit v3).
func (s Session) GroupMetadata(group string) *sarama.ConsumerGroupMetadata {
	m := sarama.NewConsumerGroupMetadata(group)
	m.GenerationID, m.MemberID = s.Generation, s.MemberID
	if s.InstanceID != "" {
		id := s.InstanceID
		m.GroupInstanceID = &id
	}
	return m
}

// Group is one instance's membership of its service's consumer group. It
// consumes the partitions assigned to this instance, starting each where
// the caller's own state ends (not at a committed group offset), and keeps
// a routing table of who owns every partition, learned from the group
// itself. It uses sarama directly because watermill's subscriber neither
// exposes the assignment nor lets a partition start at the caller's offset.
type Group struct {
	opts   GroupOptions
	client sarama.Client
	admin  sarama.ClusterAdmin
	log    *slog.Logger

	mu     sync.Mutex
	joined bool
	// inSession is true from the end of a session's Setup to its Cleanup:
	// in between (a rebalance) the instance owns nothing, and every
	// partition may come back at the offset its state holds then.
	inSession bool
	// resync, when set, is run between the current session and the next
	// one (see Resync); resyncing is true from Resync until the next Setup.
	resync     func()
	resyncing  bool
	endSession context.CancelFunc
	owned      map[int32]*sessionPartition // primary topic partitions owned now
	// last is what the latest session owned, kept by Cleanup. When the
	// next session cannot start (the group coordinator is unreachable:
	// too many brokers are down), Run restores it as owned and sets
	// detached: the instance keeps answering for what it has read while
	// the last session's lease holds (it is renewed while the coordinator
	// still accepts that session's heartbeats), and stops when it runs
	// out, when the table names another owner, or when a session starts
	// again.
	last     map[int32]*sessionPartition
	detached bool
	table    Assignment
	changed  chan struct{}
	lastErr  error
	tableAge time.Time
	// readSeq numbers the reads of the assignment, readingSince is when
	// the latest began (zero once it answered), and tableSeq is the read
	// the table is from (see refresh).
	readSeq, tableSeq uint64
	readingSince      time.Time
	// generation and memberID name the current session to the
	// coordinator; lease is how long this member may still answer for its
	// partitions (see lease), leaseFailing whether the last renewal failed.
	generation   int32
	memberID     string
	lease        lease
	leaseFailing bool
	// heartbeatSent is when the heartbeat waiting for its answer was sent
	// (zero: none waits), and coordinatorSilent whether the last one got
	// no answer at all (see coordinatorSilentLocked).
	heartbeatSent     time.Time
	coordinatorSilent bool
	// heartbeatWaiting holds the brokers a heartbeat waits on (see
	// renewLease); coordinatorFound is the coordinator that the last
	// lookup found, if found (see coordinator); coordinatorLookup is set
	// while a lookup runs, coordinatorRefresh while the client's own
	// lookup does (see refreshCoordinator).
	heartbeatWaiting    map[int32]bool
	coordinatorFound    int32
	coordinatorFoundSet bool
	coordinatorLookup   atomic.Bool
	coordinatorRefresh  atomic.Bool
	// leaving is set when a drain starts (see Drain): the session ends
	// and the member leaves the group for good.
	leaving bool
	// aside is why this instance stepped out of the group (see
	// GroupOptions.Unfit), from the step until it joins again; nil
	// otherwise.
	aside error
	// quiescing is set when a drain starts: Route stops answering self
	// for new requests (they wait for the next owner), and the session
	// ends once the inflight requests routed here (Acquire) are done.
	quiescing bool
	inflight  int
}

// sessionPartition is what a session knows of one primary topic partition
// it owns, over every topic of the group.
type sessionPartition struct {
	behind map[string]bool  // topics of this partition not yet caught up
	end    map[string]int64 // the topics' end offsets when the session began
	// failing holds the error of every topic of this partition whose
	// records Handle could not apply (see Group.handle); it is behind too.
	failing map[string]error
}

// NewGroup prepares a Group; Run joins it.
func NewGroup(client sarama.Client, opts GroupOptions, log *slog.Logger) (*Group, error) {
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		return nil, err
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1000
	}
	if opts.Refresh <= 0 {
		opts.Refresh = time.Second
	}
	if opts.SessionTimeout <= 0 {
		opts.SessionTimeout = 10 * time.Second // sarama's default
	}
	return &Group{opts: opts, client: client, admin: admin, log: log, owned: map[int32]*sessionPartition{}, changed: make(chan struct{}),
		lease: newLease(opts.SessionTimeout)}, nil
}

// GroupConfig returns the sarama configuration of a Group member.
func (c Config) GroupConfig(clientID string, opts GroupOptions) *sarama.Config {
	sc := c.Sarama(clientID)
	sc.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{
		newMemberStrategy(sarama.NewBalanceStrategySticky(), opts),
	}
	// Only the fallback: the strategy writes every join's user data.
	sc.Consumer.Group.Member.UserData = wrapUserData(memberData{Member: opts.Self}, nil)
	sc.Consumer.Group.InstanceId = opts.InstanceID
	if opts.SessionTimeout > 0 {
		sc.Consumer.Group.Session.Timeout = opts.SessionTimeout
		sc.Consumer.Group.Heartbeat.Interval = opts.SessionTimeout / 6
	}
	sc.Consumer.Offsets.AutoCommit.Interval = time.Second
	return sc
}

// Run joins the group and consumes until ctx ends.
func (g *Group) Run(ctx context.Context, cfg *sarama.Config, brokers []string) error {
	cg, err := g.join(cfg, brokers)
	if err != nil {
		return err
	}
	// cg is nil while the instance has stepped aside (it left the group).
	defer func() {
		if cg != nil {
			cg.Close()
		}
	}()
	go loop.Every(ctx, g.opts.Refresh, g.refresh)
	// The lease is renewed as often as sarama heartbeats (GroupConfig), so
	// a few lost heartbeats in a row do not let it run out.
	go loop.Every(ctx, max(g.opts.SessionTimeout/6, 100*time.Millisecond), g.renewLease)
	// A drain (see Drain) ends the session and leaves the group, once.
	if d := drainOf(ctx); d != nil {
		d.join()
		var leftOnce sync.Once
		left := func() { leftOnce.Do(d.left) }
		defer left()
		go func() {
			select {
			case <-d.Started():
				g.quiesce(ctx)
				g.mu.Lock()
				g.leaving = true
				end := g.endSession
				g.mu.Unlock()
				if end != nil {
					end()
				}
			case <-ctx.Done():
			}
		}()
		defer func() {
			if g.isLeaving() && ctx.Err() == nil {
				if cg != nil { // stepped aside: it has left already
					g.leave(cg)
					cg = nil
				}
				left()
				<-ctx.Done() // keep routing to the new owners until the stop
			}
		}()
	}
	for ctx.Err() == nil && !g.isLeaving() {
		sctx, end := context.WithCancel(ctx)
		g.mu.Lock()
		g.endSession = end
		g.mu.Unlock()
		err := cg.Consume(sctx, g.opts.Topics, g)
		end()
		g.mu.Lock()
		resync := g.resync
		g.resync = nil
		leaving, aside := g.leaving, g.aside
		g.mu.Unlock()
		if leaving {
			return nil // the deferred leave hands the partitions over
		}
		if aside != nil && ctx.Err() == nil {
			g.leave(cg)
			cg = nil
			if cg = g.stayAside(ctx, cfg, brokers); cg == nil {
				return nil
			}
			continue
		}
		if resync != nil && ctx.Err() == nil {
			resync()
			continue
		}
		if err != nil {
			if errors.Is(err, sarama.ErrClosedConsumerGroup) {
				return nil
			}
			g.log.Warn("consumer group session ended", "group", g.opts.Group, "err", err)
			g.detach()
			if errors.Is(err, sarama.ErrFencedInstancedId) && ctx.Err() == nil {
				// The coordinator gave this instance id a member id that
				// this client never learned (a join answered while the
				// coordinator moved), and sarama joins with the old one
				// again and again, each refused. A new client joins without
				// a member id, and the coordinator hands the instance id
				// to it, fencing the other.
				g.log.Error("another member id holds this instance id (INSTANCE_ID); joining again without one, which takes it over. If another process runs with the same instance id, each will fence the other",
					"group", g.opts.Group, "instance_id", g.opts.InstanceID)
				cg.Close()
				if cg, err = g.join(cfg, brokers); err != nil {
					return err
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

// join creates this member's consumer group client; its first Consume
// joins the group.
func (g *Group) join(cfg *sarama.Config, brokers []string) (sarama.ConsumerGroup, error) {
	// A client of its own, as sarama.NewConsumerGroup makes, but by
	// NewClient, so that WatchFences looks after its consumers too.
	client, err := NewClient(brokers, cfg)
	if err != nil {
		return nil, fmt.Errorf("join group %s: %w", g.opts.Group, err)
	}
	group, err := sarama.NewConsumerGroupFromClient(g.opts.Group, client)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("join group %s: %w", g.opts.Group, err)
	}
	cg := ownClientGroup{group, client}
	go func() {
		for err := range cg.Errors() {
			g.log.Warn("consumer group error", "group", g.opts.Group, "err", err)
		}
	}()
	return cg, nil
}

// ownClientGroup is a consumer group whose Close closes its client too.
type ownClientGroup struct {
	sarama.ConsumerGroup
	client sarama.Client
}

func (g ownClientGroup) Close() error { return closeWithClient(g.ConsumerGroup.Close(), g.client) }

// stepAside records why this instance cannot hold partitions (see
// GroupOptions.Unfit) and ends the session; Run then leaves the group.
func (g *Group) stepAside(why error) {
	g.mu.Lock()
	first := g.aside == nil
	if first {
		g.aside = why
	}
	end := g.endSession
	g.mu.Unlock()
	if first {
		g.log.Error("cannot apply records on this instance; stepping out of the consumer group so that the other members serve its partitions until it can", "group", g.opts.Group, "err", why)
		groupAside.WithLabelValues(g.opts.Group).Set(1)
	}
	if end != nil {
		end()
	}
}

// stayAside waits, out of the group, until Unfit says nil, then joins the
// group again and returns the new consumer group; nil if ctx ended or a
// drain began first.
func (g *Group) stayAside(ctx context.Context, cfg *sarama.Config, brokers []string) sarama.ConsumerGroup {
	g.mu.Lock()
	g.last = nil // nothing of the left session may be served detached
	g.mu.Unlock()
	logged := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(stayAsidePoll):
		}
		if g.isLeaving() {
			return nil
		}
		why := g.opts.Unfit()
		if why != nil {
			if time.Since(logged) >= 30*time.Second {
				logged = time.Now()
				g.log.Error("still cannot apply records; still out of the consumer group", "group", g.opts.Group, "err", why)
			}
			continue
		}
		cg, err := g.join(cfg, brokers)
		if err != nil {
			g.log.Warn("able to apply records again, but cannot rejoin the consumer group yet", "group", g.opts.Group, "err", err)
			continue
		}
		g.mu.Lock()
		g.aside = nil
		g.mu.Unlock()
		groupAside.WithLabelValues(g.opts.Group).Set(0)
		g.log.Info("able to apply records again; rejoining the consumer group", "group", g.opts.Group)
		return cg
	}
}

// stayAsidePoll is how often an instance that stepped aside asks Unfit
// whether it can hold partitions again.
var stayAsidePoll = time.Second

// quiesceWait bounds how long a drain waits for the requests in flight
// on this instance's partitions before it ends the session anyway.
const quiesceWait = 10 * time.Second

// quiesce stops routing new requests here and waits until the requests
// in flight (Acquire) are done, or quiesceWait, or ctx ends.
func (g *Group) quiesce(ctx context.Context) {
	g.mu.Lock()
	g.quiescing = true
	g.notifyLocked()
	g.mu.Unlock()
	deadline := time.Now().Add(quiesceWait)
	for {
		g.mu.Lock()
		n, changed := g.inflight, g.changed
		g.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			g.log.Warn("handing partitions over with requests still in flight", "group", g.opts.Group, "requests", n)
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Acquire implements routing.Acquirer: a request about to be served here
// for partition p holds it until release, so that a drain hands p over
// only once the request is done. It refuses once the drain has begun.
func (g *Group) Acquire(p int32, _ int) (release func(), ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.quiescing {
		return nil, false
	}
	g.inflight++
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.inflight--
			if g.inflight == 0 {
				g.notifyLocked()
			}
		})
	}, true
}

func (g *Group) isLeaving() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.leaving
}

// leave closes the consumer group (its session has ended: this instance
// owns nothing now) and, for a static member, sends the LeaveGroup request
// that sarama's Close leaves out (KIP-345 removes a static member by its
// group.instance.id): the coordinator then rebalances at once, rather than
// after the session timeout. A dynamic member leaves in Close.
func (g *Group) leave(cg sarama.ConsumerGroup) {
	start := time.Now()
	if err := cg.Close(); err != nil {
		g.log.Warn("closing the consumer group", "group", g.opts.Group, "err", err)
	}
	if g.opts.InstanceID != "" {
		done := make(chan error, 1)
		go func() {
			resp, err := g.admin.RemoveMemberFromConsumerGroup(g.opts.Group, []string{g.opts.InstanceID})
			if err == nil && resp != nil {
				if resp.Err != sarama.ErrNoError {
					err = resp.Err
				}
				for _, m := range resp.Members {
					if m.Err != sarama.ErrNoError && m.Err != sarama.ErrUnknownMemberId {
						err = m.Err
					}
				}
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				g.log.Warn("leaving the consumer group failed; the partitions move when the session times out", "group", g.opts.Group, "err", err)
				return
			}
		case <-time.After(leaveTimeout):
			g.log.Warn("leaving the consumer group timed out; the partitions move when the session times out", "group", g.opts.Group)
			return
		}
	}
	groupLeaves.Inc()
	g.log.Info("left the consumer group: partitions handed over", "group", g.opts.Group, "instance", g.opts.InstanceID, "took", time.Since(start))
	g.mu.Lock()
	g.lease.end()
	g.notifyLocked()
	g.mu.Unlock()
	g.refresh()
}

// detach keeps answering for the partitions of the last session while no
// session can start (see Group.last). Only caught-up partitions are kept.
func (g *Group) detach() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.owned) > 0 || len(g.last) == 0 {
		return
	}
	kept := map[int32]*sessionPartition{}
	for p, st := range g.last {
		if len(st.behind) == 0 {
			kept[p] = st
		}
	}
	if len(kept) == 0 {
		return
	}
	g.owned, g.detached = kept, true
	g.notifyLocked()
	g.log.Warn("not in the consumer group (coordinator unreachable); still answering for the partitions read so far, without new records, while the last session's lease holds",
		"group", g.opts.Group, "partitions", len(kept))
}

// Setup implements sarama.ConsumerGroupHandler: it hands the new
// assignment to Assigned first (command-svc fences the previous owners
// there), then points every partition of the session at the caller's own offset and records
// which partitions are behind.
func (g *Group) Setup(sess sarama.ConsumerGroupSession) error {
	owned := map[int32]*sessionPartition{}
	for _, p := range sess.Claims()[g.opts.Topics[0]] {
		owned[p] = &sessionPartition{behind: map[string]bool{}, end: map[string]int64{}}
	}
	parts := make([]int32, 0, len(owned))
	for p := range owned {
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	if g.opts.Assigned != nil {
		g.opts.Assigned(Session{Partitions: parts, Generation: sess.GenerationID(), MemberID: sess.MemberID(), InstanceID: g.opts.InstanceID})
	}
	// The offsets of every partition of the session in one request per
	// broker (ListOffsets).
	ends, err := ListOffsets(g.client, sarama.OffsetNewest, sarama.ReadUncommitted, sess.Claims())
	if err != nil {
		return err
	}
	starts := map[string]map[int32]int64{}
	fromOldest := map[string][]int32{}
	for topic, ps := range sess.Claims() {
		starts[topic] = map[int32]int64{}
		for _, p := range ps {
			start, err := g.opts.Start(topic, p)
			if err != nil {
				return err
			}
			if start == sarama.OffsetOldest {
				fromOldest[topic] = append(fromOldest[topic], p)
			}
			starts[topic][p] = start
		}
	}
	if len(fromOldest) > 0 {
		oldest, err := ListOffsets(g.client, sarama.OffsetOldest, sarama.ReadUncommitted, fromOldest)
		if err != nil {
			return err
		}
		for topic, ps := range oldest {
			for p, o := range ps {
				starts[topic][p] = o
			}
		}
	}
	for topic, ps := range sess.Claims() {
		for _, p := range ps {
			start := starts[topic][p]
			// MarkOffset only moves forward and ResetOffset only back: both
			// together set the partition's start to exactly our offset.
			sess.MarkOffset(topic, p, start, "")
			sess.ResetOffset(topic, p, start, "")
			if owned[p] == nil {
				owned[p] = &sessionPartition{behind: map[string]bool{}, end: map[string]int64{}}
			}
			owned[p].end[topic] = ends[topic][p]
			if start < ends[topic][p] {
				owned[p].behind[topic] = true
			}
		}
	}
	g.mu.Lock()
	g.joined, g.inSession = true, true
	g.owned = owned
	g.last, g.detached = nil, false
	g.resyncing = false
	g.generation, g.memberID = sess.GenerationID(), sess.MemberID()
	g.lease.end()
	g.mu.Unlock()
	groupRebalances.WithLabelValues(g.opts.Group).Inc()
	groupOwned.WithLabelValues(g.opts.Group).Set(float64(len(parts)))
	g.log.Info("partitions assigned", "group", g.opts.Group, "partitions", parts, "generation", sess.GenerationID())
	g.renewLease() // the first lease of the session: nothing is served before it
	g.refresh()
	return nil
}

// Resync ends the current session and, before the next one starts, calls
// prepare with the partitions this instance owned. query-svc uses it to
// rebuild its view: prepare drops the partitions' data, so the next
// session reads them again from the start. The group membership stays (a
// static member rejoins without a rebalance).
func (g *Group) Resync(prepare func(owned []int32)) {
	owned := g.Owned()
	g.mu.Lock()
	g.resync = func() { prepare(owned) }
	g.resyncing = true
	end := g.endSession
	g.mu.Unlock()
	if end != nil {
		end()
	}
}

// Rejoin ends the current session, so that the next one starts with a
// fresh Setup: Assigned runs again for whatever the group then assigns,
// and every partition starts again at the caller's own offset. Nothing is
// dropped. command-svc calls it when Kafka fenced one of its producers of
// a partition it believes it owns: either another instance owns the
// partition now and the rejoin shows it, or this one still does, and the
// new session gives it a fresh producer and catches it up first. A call
// while a Resync or Rejoin is pending does nothing.
func (g *Group) Rejoin(reason string) {
	g.mu.Lock()
	if g.resyncing {
		g.mu.Unlock()
		return
	}
	g.resync = func() {}
	g.resyncing = true
	end := g.endSession
	g.mu.Unlock()
	g.log.Warn("rejoining the consumer group", "group", g.opts.Group, "reason", reason)
	if end != nil {
		end()
	}
}

// Resyncing reports whether a Resync or Rejoin has not reached its next
// session yet.
func (g *Group) Resyncing() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.resyncing
}

// Behind returns how many owned partitions are still catching up.
func (g *Group) Behind() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, st := range g.owned {
		if len(st.behind) > 0 {
			n++
		}
	}
	return n
}

// Cleanup implements sarama.ConsumerGroupHandler. With eager rebalancing
// every partition is revoked here, and the sticky plan gives most of them
// straight back in the next Setup; until then the instance answers for
// nothing and requests wait for the new table.
func (g *Group) Cleanup(sarama.ConsumerGroupSession) error {
	g.mu.Lock()
	if !g.detached {
		g.last = g.owned
	}
	g.inSession = false
	g.owned = map[int32]*sessionPartition{}
	g.notifyLocked()
	g.mu.Unlock()
	groupOwned.WithLabelValues(g.opts.Group).Set(0)
	return nil
}

// ConsumeClaim implements sarama.ConsumerGroupHandler: it consumes one
// partition of the session (sarama's "claim") until the session ends.
func (g *Group) ConsumeClaim(sess sarama.ConsumerGroupSession, part sarama.ConsumerGroupClaim) error {
	topic, p := part.Topic(), part.Partition()
	// Setup read the end offsets of every partition of the session in one
	// request; only a partition it did not know asks again.
	end, known := g.sessionEnd(topic, p)
	if !known {
		var err error
		if end, err = g.client.GetOffset(topic, p, sarama.OffsetNewest); err != nil {
			return err
		}
	}
	next := part.InitialOffset()
	if next >= end {
		g.caughtUp(topic, p)
	} else if next >= 0 && end-next <= drainedProbeMax {
		if ok, err := Drained(g.client, topic, p, next, end); err == nil && ok {
			// Only transaction markers (or aborted records) lie between where
			// the caller's state ends and the end: the usual tail of a
			// restart, since every command ends with a commit marker. One
			// Fetch says so now, instead of a first fetch's wait and a
			// moment of silence (below).
			g.caughtUp(topic, p)
		}
	}
	// The end counts transaction markers, which a consumer never receives,
	// so the offset after the last record may stay below it. A partition
	// that has fetched up to the end and then waits a moment with nothing to
	// receive has read everything committed before it. The timer restarts
	// after every batch, so a slow Handle never counts as idle (which
	// would let command-svc accept writes on a state that is behind).
	idle := time.NewTimer(idleAfter)
	defer idle.Stop()
	defer g.dropLag(topic, p)
	g.setLag(topic, p, part.HighWaterMarkOffset()-next)
	batch := make([]*sarama.ConsumerMessage, 0, g.opts.MaxBatch)
	for {
		select {
		case <-sess.Context().Done():
			return nil
		case <-idle.C:
			if len(part.Messages()) == 0 && part.HighWaterMarkOffset() >= end && next < end && g.behind(topic, p) {
				if ok, err := Drained(g.client, topic, p, next, end); err == nil && ok {
					g.caughtUp(topic, p)
				}
			}
			g.setLag(topic, p, part.HighWaterMarkOffset()-next)
			idle.Reset(idleAfter)
			continue
		case msg, ok := <-part.Messages():
			if !ok {
				return nil
			}
			batch = append(batch[:0], msg)
		}
	drain:
		for len(batch) < g.opts.MaxBatch || Continues(batch[len(batch)-1]) {
			if !Continues(batch[len(batch)-1]) {
				select {
				case msg, ok := <-part.Messages():
					if !ok {
						break drain
					}
					batch = append(batch, msg)
				default:
					break drain
				}
				continue
			}
			// The rest of its group is committed with it, and on its way.
			select {
			case msg, ok := <-part.Messages():
				if !ok {
					break drain
				}
				batch = append(batch, msg)
			case <-time.After(continueWait):
				g.log.Warn("the rest of a group of records did not come; handing the batch over without it",
					"topic", topic, "partition", p, "offset", batch[len(batch)-1].Offset)
				break drain
			case <-sess.Context().Done():
				return nil
			}
		}
		if !g.handle(sess, topic, p, batch) {
			return nil // the session ended while the batch could not be handled
		}
		next = batch[len(batch)-1].Offset + 1
		release(batch)
		sess.MarkOffset(topic, p, next, "")
		g.setLag(topic, p, part.HighWaterMarkOffset()-next)
		if next >= end {
			g.caughtUp(topic, p)
		}
		idle.Reset(idleAfter)
	}
}

// handle hands batch to Handle until it succeeds, and reports false if
// the session ended first. While Handle fails (a full disk, a store that
// cannot write, a data key not readable yet) the partition counts as
// behind: it is not served (Serving, Ready) and nothing of the batch is
// marked consumed, since what the caller holds is older than what Kafka
// holds. Handle is called again after a growing pause (up to
// handleRetryMax), never in a hot loop, and the partition is served again
// once it has caught up. If GroupOptions.Unfit names a reason after a
// failure, the instance steps aside instead (handle reports false, and
// the session ends): the other members can apply what this one cannot.
func (g *Group) handle(sess sarama.ConsumerGroupSession, topic string, p int32, batch []*sarama.ConsumerMessage) bool {
	err := g.opts.Handle(sess.Context(), topic, p, batch)
	if err == nil {
		return true
	}
	g.failing(topic, p, err)
	logged := time.Now()
	wait := handleRetryMin
	for {
		if g.opts.Unfit != nil {
			if why := g.opts.Unfit(); why != nil {
				g.stepAside(why)
				return false
			}
		}
		select {
		case <-sess.Context().Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, handleRetryMax)
		if err = g.opts.Handle(sess.Context(), topic, p, batch); err == nil {
			g.log.Info("records apply again; the partition is served once caught up", "group", g.opts.Group, "topic", topic, "partition", p, "offset", batch[0].Offset)
			g.mu.Lock()
			if st := g.owned[p]; st != nil {
				delete(st.failing, topic)
			}
			g.mu.Unlock()
			return true
		}
		if time.Since(logged) >= 30*time.Second {
			logged = time.Now()
			g.log.Error("records still cannot be applied; the partition is still not served", "group", g.opts.Group, "topic", topic, "partition", p, "offset", batch[0].Offset, "err", err)
		}
	}
}

// handleRetryMin and handleRetryMax bound the pause between two calls of
// Handle for a batch it failed.
var (
	handleRetryMin = 100 * time.Millisecond
	handleRetryMax = 2 * time.Second
)

// failing marks topic/p as behind because Handle failed with err.
func (g *Group) failing(topic string, p int32, err error) {
	g.log.Error("cannot apply records; the partition is not served until they apply", "group", g.opts.Group, "topic", topic, "partition", p, "err", err)
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.owned[p]
	if st == nil {
		return
	}
	if st.failing == nil {
		st.failing = map[string]error{}
	}
	st.failing[topic] = err
	if !st.behind[topic] {
		st.behind[topic] = true
		g.notifyLocked()
	}
}

// HeaderContinues marks a record that the next record of its partition
// belongs with, in the same transaction: every event of one command but
// the last. Group never ends a batch after such a record, so a reader
// folds the whole command at once and never shows the state between two
// of its events.
const HeaderContinues = "profiles-continues"

// continueWait bounds how long a batch waits for the rest of a group of
// records (HeaderContinues). It is committed with the record before it,
// so it comes at once; the bound only keeps a malformed producer from
// stalling the partition.
const continueWait = 5 * time.Second

// Continues reports whether r carries HeaderContinues.
func Continues(r *sarama.ConsumerMessage) bool { return HeaderValue(r, HeaderContinues) != "" }

// sessionEnd returns the end offset of topic/p that Setup read.
func (g *Group) sessionEnd(topic string, p int32) (int64, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if st := g.owned[p]; st != nil && st.end != nil {
		end, ok := st.end[topic]
		return end, ok
	}
	return 0, false
}

// behind reports whether topic/p of this instance has not caught up yet.
func (g *Group) behind(topic string, p int32) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.owned[p]
	return st != nil && st.behind[topic]
}

func (g *Group) caughtUp(topic string, p int32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if st := g.owned[p]; st != nil && st.behind[topic] {
		delete(st.behind, topic)
		if len(st.behind) == 0 {
			g.log.Info("partition caught up", "group", g.opts.Group, "partition", p, "topic", topic)
			g.notifyLocked()
		}
	}
}

func (g *Group) notifyLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// Serving reports whether this instance owns partition p, has caught up
// with it, and holds its lease, so that it may answer for p's keys itself.
// An answer decided on p's state is only sure once Serving holds after the
// decision: a member frozen in between wakes up with its lease run out.
func (g *Group) Serving(p int32) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.servingLocked(g.owned[p], time.Now())
}

// Holds implements routing.Holder: Serving, in any epoch (a Group has
// one table).
func (g *Group) Holds(p int32, _ int) bool { return g.Serving(p) }

// Interrupt implements routing.Interrupter: the context it returns is
// cancelled once this instance stops serving p (see Serving) or starts
// handing its partitions over (a drain). A read shorter than
// interruptAfter costs a timer only; a longer one is watched by a
// goroutine that wakes at every change of the group and every
// interruptPoll (a lease runs out without a change). The caller must call
// the cancel func when the read is done.
func (g *Group) Interrupt(ctx context.Context, p int32, _ int) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	t := time.AfterFunc(interruptAfter, func() {
		for {
			g.mu.Lock()
			lost := g.quiescing || !g.servingLocked(g.owned[p], time.Now())
			changed := g.changed
			g.mu.Unlock()
			if lost {
				cancel()
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-changed:
			case <-time.After(interruptPoll):
			}
		}
	})
	return ctx, func() {
		t.Stop()
		cancel()
	}
}

// interruptAfter is how long a read runs before Interrupt watches it, and
// interruptPoll how often a watched read checks the lease.
const (
	interruptAfter = 20 * time.Millisecond
	interruptPoll  = 100 * time.Millisecond
)

// servingLocked reports whether st, an owned partition's state (nil if not
// owned), may be served at now: caught up, and under the lease. Detached
// (see Group.last) too: the lease of the last session still tells that
// nobody else can own its partitions yet, and once it runs out nothing
// tells that any more (this instance may be the only one cut off from
// the brokers, while another serves newer writes).
func (g *Group) servingLocked(st *sessionPartition, now time.Time) bool {
	return st != nil && len(st.behind) == 0 && g.lease.held(now)
}

// Owned returns the primary-topic partitions this instance owns now.
func (g *Group) Owned() []int32 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ownedLocked()
}

// InSession runs f with the partitions of the current session, and
// reports whether it did: not between sessions (Cleanup to the end of the
// next Setup), nor while detached. No session can end or start while f
// runs, so f may drop the state of partitions it is not given: no handler
// of this group writes them until the next Setup, which reads the state's
// offsets afresh. f must not call g's methods.
func (g *Group) InSession(f func(owned []int32)) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.inSession || g.detached {
		return false
	}
	f(g.ownedLocked())
	return true
}

func (g *Group) ownedLocked() []int32 {
	out := make([]int32, 0, len(g.owned))
	for p := range g.owned {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// ErrBetweenSessions is reported (wrapped) by Ready during a rebalance:
// the instance owns no partition until the next session has set its
// partitions up.
var ErrBetweenSessions = errors.New("between two sessions of the consumer group (rebalancing)")

// ErrCutOff is reported (wrapped, with ErrNoOwner) by Route for a
// partition this instance owned while it cannot reach its group
// coordinator: its lease ran out, and neither a heartbeat nor the
// group's table gets an answer.
var ErrCutOff = errors.New("this instance is cut off from its group coordinator")

// ErrLeaseExpired is reported (wrapped) by Ready while the member's lease
// has run out: the coordinator has not accepted a heartbeat of this
// session for most of a session timeout (see lease).
var ErrLeaseExpired = errors.New("the member's lease ran out (no heartbeat accepted lately)")

// Ready reports nil once the instance has joined the group, is in a
// session (or answers, detached, for what the last one read), and has
// caught up with every partition it owns.
func (g *Group) Ready() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.aside != nil {
		return fmt.Errorf("cannot apply records, so out of group %s until it can (the other members serve its partitions): %w", g.opts.Group, g.aside)
	}
	if !g.joined {
		return fmt.Errorf("not yet a member of group %s", g.opts.Group)
	}
	if !g.inSession && !g.detached {
		return fmt.Errorf("group %s: %w", g.opts.Group, ErrBetweenSessions)
	}
	if !g.lease.held(time.Now()) {
		return fmt.Errorf("group %s: %w", g.opts.Group, ErrLeaseExpired)
	}
	behind := 0
	var failing []string
	for p, st := range g.owned {
		if len(st.behind) > 0 {
			behind++
		}
		for topic, err := range st.failing {
			failing = append(failing, fmt.Sprintf("%s/%d: %v", topic, p, err))
		}
	}
	if len(failing) > 0 {
		sort.Strings(failing)
		return fmt.Errorf("%d owned partitions cannot apply their records: %s", len(failing), strings.Join(failing, "; "))
	}
	if behind > 0 {
		return fmt.Errorf("%d owned partitions catching up", behind)
	}
	return nil
}

// Assignment returns the latest routing table.
func (g *Group) Assignment() Assignment {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.table
}

// routeLocked is what Route sees of p at now, under g.mu: whether this
// instance serves p, is cut off from it, or knows its owner elsewhere.
func (g *Group) routeLocked(p int32, now time.Time) (owner Member, serving, cutOff, elsewhere bool) {
	st := g.owned[p]
	owner, ok := g.table.Owner(p)
	if g.detached && st != nil && ok && owner.ID != g.opts.Self.ID && g.lastErr == nil {
		// The group has moved on without us: p is someone else's.
		delete(g.owned, p)
		st = nil
	}
	// A quiescing member (a drain) serves what is in flight, but new
	// requests wait for the next owner.
	serving = g.servingLocked(st, now) && !g.quiescing
	// Cut off: the partition is ours as far as this instance knows, but
	// its lease ran out and the coordinator does not answer its
	// heartbeats. Waiting cannot help before it can reach Kafka again
	// (by then the group has most likely moved the partition on), so
	// the request fails now rather than after the caller's wait. A
	// coordinator that answers with a refusal (this member was frozen,
	// and the group moved on) is no cut: the session ends at once, and
	// the request waits for the new owner.
	cutOff = st != nil && !serving && len(st.behind) == 0 && g.coordinatorSilentLocked(now)
	elsewhere = st == nil && ok && owner.ID != g.opts.Self.ID && owner.URL != ""
	return owner, serving, cutOff, elsewhere
}

// Connected implements routing.ConnectedRouter: it reports whether the
// group coordinator answered this member's last heartbeat (an answer that
// refuses it counts), so that the table follows the group. It is false
// while this instance is cut off from its coordinator, or the coordinator
// is down and no other broker has taken the group over yet.
func (g *Group) Connected() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.coordinatorSilentLocked(time.Now())
}

// ServesNow implements routing.NowRouter: it reports whether Route would
// route p here at once (this instance serves p and is not handing it
// over), without waiting. A Group has one table: its epoch is 0.
func (g *Group) ServesNow(p int32) (epoch int, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, serving, _, _ := g.routeLocked(p, time.Now())
	return 0, serving
}

// Route tells where a request for partition p must go: here (self is true)
// once this instance serves p, or the owner's Member. While nobody can
// serve p (a rebalance, a dead owner whose session has not expired, or an
// owner still catching up) it waits, until ctx ends; then ErrNoOwner.
func (g *Group) Route(ctx context.Context, p int32) (m Member, self bool, err error) {
	for {
		g.mu.Lock()
		changed := g.changed
		owner, serving, cutOff, elsewhere := g.routeLocked(p, time.Now())
		g.mu.Unlock()
		switch {
		case serving:
			return g.opts.Self, true, nil
		case cutOff:
			return Member{}, false, fmt.Errorf("%w (partition %d): %w", ErrNoOwner, p, ErrCutOff)
		case elsewhere:
			return owner, false, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return Member{}, false, fmt.Errorf("%w (partition %d)", ErrNoOwner, p)
		case <-time.After(100 * time.Millisecond):
			g.refresh() // the owner may have changed without a rebalance of ours
		}
	}
}

// refresh re-reads the group's assignment, at most every 50ms, from the
// coordinator that the lease heartbeats use (assignmentCoordinator). It
// waits for the answer at most silentAfter. A coordinator that does not
// answer (its broker frozen, or deposed) would hold the read until the
// connection's read timeout, and with it every request that waits for an
// owner, although the group may have moved to another broker, which the
// controller does once it fences the silent one. So after silentAfter the
// coordinator is looked up again in the background (lookUpCoordinator),
// the read goes on in its own goroutine, and the next refresh reads from
// the coordinator found then; a read begins while another waits only once
// that one has waited silentAfter, and an answer older than the table's
// is dropped. sarama's own lookup (its admin's cached coordinator, and the
// client's RefreshCoordinator) asks the least loaded broker it knows,
// which can be the frozen one: the routing table then stayed unreadable
// until that broker continued.
func (g *Group) refresh() {
	g.mu.Lock()
	now := time.Now()
	if now.Sub(g.tableAge) < 50*time.Millisecond || (!g.readingSince.IsZero() && now.Sub(g.readingSince) < silentAfter) {
		g.mu.Unlock()
		return
	}
	g.tableAge, g.readingSince = now, now
	g.readSeq++
	seq := g.readSeq
	g.mu.Unlock()
	var asked atomic.Int32 // the coordinator the read went to; -1 before
	asked.Store(-1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		a, err := g.readAssignment(&asked)
		g.applyAssignment(seq, now, a, err)
	}()
	select {
	case <-done:
	case <-time.After(silentAfter):
		g.lookUpCoordinator(asked.Load())
	}
}

// readAssignment reads the group's assignment from assignmentCoordinator,
// and stores that broker's id in asked before it asks. A coordinator
// that fails the read is looked up again in the background.
func (g *Group) readAssignment(asked *atomic.Int32) (Assignment, error) {
	coord, err := g.assignmentCoordinator()
	if err != nil {
		return Assignment{}, err
	}
	asked.Store(coord.ID())
	_ = coord.Open(g.client.Config()) // ErrAlreadyConnected when it is
	a, err := describeAssignment(coord, g.client.Config().Version, g.opts.Group, g.opts.Topics[0])
	if err != nil {
		g.mu.Lock()
		if g.coordinatorFoundSet && g.coordinatorFound == coord.ID() {
			g.coordinatorFoundSet = false // it was wrong too: back to the client's
		}
		g.mu.Unlock()
		g.lookUpCoordinator(coord.ID())
	}
	return a, err
}

// assignmentCoordinator returns the coordinator that a lookup found after
// the client's went silent (see lookUpCoordinator), and else the
// client's (see coordinator).
func (g *Group) assignmentCoordinator() (*sarama.Broker, error) {
	g.mu.Lock()
	found, ok := g.coordinatorFound, g.coordinatorFoundSet
	g.mu.Unlock()
	if ok {
		if b, err := g.client.Broker(found); err == nil {
			return b, nil
		}
	}
	return g.coordinator()
}

// applyAssignment makes a, read with err by read seq begun at began,
// the routing table, unless a later read's answer came first.
func (g *Group) applyAssignment(seq uint64, began time.Time, a Assignment, err error) {
	unowned := -1
	if err == nil {
		// From the client's cached metadata: no request, most of the time.
		if ps, perr := g.client.Partitions(g.opts.Topics[0]); perr == nil {
			unowned = 0
			for _, p := range ps {
				if _, ok := a.Owner(p); !ok {
					unowned++
				}
			}
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.readingSince.Equal(began) {
		g.readingSince = time.Time{}
	}
	if seq < g.tableSeq {
		return
	}
	g.tableSeq = seq
	if err != nil {
		if g.lastErr == nil {
			g.log.Warn("cannot read group assignment", "group", g.opts.Group, "err", err)
		}
		g.lastErr = err
		return
	}
	if unowned >= 0 {
		groupUnowned.WithLabelValues(g.opts.Group).Set(float64(unowned))
	}
	if g.lastErr != nil {
		g.log.Info("group assignment readable again", "group", g.opts.Group)
	}
	g.lastErr = nil
	if !sameOwners(g.table, a) {
		g.notifyLocked()
	}
	g.table = a
}

func sameOwners(a, b Assignment) bool {
	if a.State != b.State || len(a.owners) != len(b.owners) {
		return false
	}
	for p, m := range a.owners {
		if b.owners[p] != m {
			return false
		}
	}
	return true
}
