package follower

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"profiles/platform/kafkax"
	"profiles/platform/peer"
	"profiles/platform/routing"
	"profiles/platform/topology"
)

// ErrNoGeneration is returned while no generation serves yet.
var ErrNoGeneration = errors.New("no snapshot generation serves yet")

// ErrRebuildUnsupported is returned by Rebuild in the full-replica mode.
var ErrRebuildUnsupported = errors.New("view rebuild is supported in the partitioned mode only; in the full-replica mode delete DATA_DIR and restart")

// Follower is the consumption of one snapshot generation: a kafkax.Group
// (partitioned mode) or a Replica (full mode), with the routing it gives.
type Follower interface {
	Route(ctx context.Context, p int32) (owner kafkax.Member, self bool, err error)
	// Serving reports at once whether this instance answers for p now.
	Serving(p int32) bool
	Run(ctx context.Context) error
	Ready() error
	// Owned returns the partitions it answers for; nil means all of them.
	Owned() []int32
	Assignment() kafkax.Assignment
}

// NewFollower builds the follower of generation n. applier is set up for
// n's topics; a kafkax.Group must use handle as its record handler (it
// counts records for the rebuild status) and Generations.Assigned as its
// Assigned callback.
type NewFollower func(n int, applier Applier, handle func(ctx context.Context, topic string, p int32, records []*sarama.ConsumerMessage) error) (Follower, error)

// Generations keeps query-svc on the current snapshot generation. At a
// switch it starts the new generation's follower next to the serving one
// (its own consumer group, see topology.GenerationGroup), keeps answering
// through the old one while the new one catches up into the same view, and
// moves routing over once the new one is ready. The view's records are
// applied by version, so two generations writing the same profile never
// move it back in time. Use NewGenerations, then Run.
type Generations struct {
	client  sarama.Client
	kafka   topology.Config
	applier Applier // its topics are set per generation
	build   NewFollower
	log     *slog.Logger

	mu       sync.Mutex
	serving  Follower
	n        int
	changed  chan struct{}
	running  map[Follower]int // generation of every running follower
	grace    time.Duration
	rebuild  peer.ViewStatus
	records  atomic.Int64 // records applied, for the rebuild status
	counting atomic.Bool
}

// NewGenerations returns a Generations that follows the control topic of
// kcfg. applier's snapshot and index topics are replaced by those of each
// generation.
func NewGenerations(client sarama.Client, kcfg topology.Config, applier Applier, build NewFollower, log *slog.Logger) *Generations {
	return &Generations{
		client: client, kafka: kcfg, applier: applier, build: build, log: log,
		changed: make(chan struct{}), running: map[Follower]int{}, rebuild: peer.ViewStatus{State: "idle"},
		grace: 30 * time.Second,
	}
}

// SetGrace sets how long the old generation keeps running after the new
// one has taken over routing (default 30s). Other instances may still
// route by the old generation meanwhile, and forward requests here that
// only the old generation's owner can serve.
func (g *Generations) SetGrace(d time.Duration) { g.grace = d }

// Run follows the control topic until ctx ends.
func (g *Generations) Run(ctx context.Context) error {
	return topology.FollowGenerations(ctx, g.client, g.kafka.ControlTopic, g.log, g.runGeneration)
}

func (g *Generations) runGeneration(ctx context.Context, n int, ready func()) error {
	if err := topology.EnsureGeneration(ctx, g.kafka, "query-svc", n); err != nil {
		return err
	}
	gcfg := g.kafka.ForGeneration(n)
	a := g.applier
	a.SnapshotsTopic, a.IndexTopic = gcfg.SnapshotsTopic, gcfg.EmailIndexTopic
	f, err := g.build(n, a, func(ctx context.Context, topic string, p int32, records []*sarama.ConsumerMessage) error {
		err := a.Handle(ctx, topic, p, records)
		if err == nil && g.counting.Load() {
			g.records.Add(int64(len(records)))
		}
		return err
	})
	if err != nil {
		return err
	}
	if s := standbyOf(f); s != nil {
		s.Settle = func(ctx context.Context) { g.dropUnowned(ctx, f) }
	}
	g.mu.Lock()
	g.running[f] = n
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.running, f)
		g.mu.Unlock()
	}()
	go func() {
		// Take over once caught up; until then the old generation answers.
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if f.Ready() != nil {
				continue
			}
			g.mu.Lock()
			old := g.serving
			g.serving, g.n = f, n
			close(g.changed)
			g.changed = make(chan struct{})
			g.mu.Unlock()
			g.log.Info("serving snapshot generation", "generation", n)
			topology.ServingGeneration(n)
			if old != nil {
				// Other instances may still route by the old generation:
				// keep it running (and its partitions in the view) so that
				// what they forward here is served.
				select {
				case <-ctx.Done():
					return
				case <-time.After(g.grace):
				}
			}
			ready() // stops the older generations
			// The old generation's partitions that the new one does not
			// own are not served here any more.
			time.Sleep(time.Second)
			g.dropUnowned(ctx, f)
			return
		}
	}()
	return f.Run(ctx)
}

// sessioner is a Follower in a consumer group (kafkax.Group.InSession).
type sessioner interface {
	InSession(f func(owned []int32)) bool
}

// dropUnowned drops the data of the partitions that neither f nor another
// running generation owns. It drops only within a session of f's group,
// never between two: the next session's Setup reads the view's offsets of
// the partitions it gets, and a drop after that read would leave them
// starting past data that is gone. Between sessions it waits and tries
// again; the next Setup drops through Assigned anyway.
func (g *Generations) dropUnowned(ctx context.Context, f Follower) {
	s, ok := f.(sessioner)
	if !ok {
		return // a full replica holds every partition
	}
	for ctx.Err() == nil {
		others := g.othersOwned(f)
		if s.InSession(func(owned []int32) { g.applier.Assigned(append(append(owned, others...), g.warm()...)) }) {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// othersOwned returns the partitions that the running followers other
// than f own.
func (g *Generations) othersOwned(f Follower) []int32 {
	g.mu.Lock()
	others := make([]Follower, 0, len(g.running))
	for o := range g.running {
		if o != f {
			others = append(others, o)
		}
	}
	g.mu.Unlock()
	var out []int32
	for _, o := range others {
		out = append(out, o.Owned()...)
	}
	return out
}

// Assigned is the Assigned callback of every generation's group: it drops
// the data of partitions that no running generation owns or keeps warm.
func (g *Generations) Assigned(owned []int32) { g.applier.Assigned(append(g.keep(owned), g.warm()...)) }

// keep returns parts, plus, while a switch runs two generations at once,
// every partition either of them owns.
func (g *Generations) keep(parts []int32) []int32 {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := append([]int32(nil), parts...)
	if len(g.running) > 1 {
		for f := range g.running {
			out = append(out, f.Owned()...)
		}
	}
	return out
}

// keeper is a Follower that keeps partitions it does not own in the view
// (a GroupFollower with a Standby).
type keeper interface{ Keep() []int32 }

// warm returns the partitions that a running generation keeps warm for
// other instances (see Standby.Keep).
func (g *Generations) warm() []int32 {
	g.mu.Lock()
	fs := make([]Follower, 0, len(g.running))
	for f := range g.running {
		fs = append(fs, f)
	}
	g.mu.Unlock()
	var out []int32
	for _, f := range fs {
		if k, ok := f.(keeper); ok {
			out = append(out, k.Keep()...)
		}
	}
	return out
}

func (g *Generations) current() (Follower, int, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.serving, g.n, g.changed
}

// Generation returns the generation that serves (0 while none does).
func (g *Generations) Generation() int {
	_, n, _ := g.current()
	return n
}

// Route routes through the serving generation, waiting for one if none
// serves yet. During a switch, while the serving generation has no owner
// ready for p (its group is still rebalancing or catching up), a
// generation that still runs (the old one, for SWITCH_GRACE) may answer
// instead: both hold the same data. A wait ends when the serving
// generation changes, and the request is routed again.
func (g *Generations) Route(ctx context.Context, p int32) (kafkax.Member, bool, error) {
	m, self, _, err := g.RouteWithEpoch(ctx, p)
	return m, self, err
}

// RouteWithEpoch implements routing.EpochRouter: Route, and the generation
// whose table gave the answer (the serving one, or during a switch an
// older one that still runs).
func (g *Generations) RouteWithEpoch(ctx context.Context, p int32) (kafkax.Member, bool, int, error) {
	for {
		f, n, changed := g.current()
		if f == nil {
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return kafkax.Member{}, false, 0, fmt.Errorf("%w (partition %d)", kafkax.ErrNoOwner, p)
			}
		}
		var cutOff error
		for i, cand := range append([]generation{{f, n}}, g.others(f)...) {
			quick, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
			m, self, err := cand.f.Route(quick, p)
			cancel()
			if err == nil {
				return m, self, cand.n, nil
			}
			if i == 0 && errors.Is(err, kafkax.ErrCutOff) {
				cutOff = err
			}
		}
		if cutOff != nil {
			// The serving generation is cut off from its coordinator,
			// and no other generation routes p: waiting cannot help
			// before it reaches Kafka again (see kafkax.ErrCutOff).
			return kafkax.Member{}, false, n, cutOff
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return kafkax.Member{}, false, 0, fmt.Errorf("%w (partition %d)", kafkax.ErrNoOwner, p)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// The followers tell at once whether they serve a partition, so that a
// read served here needs no routing wait (see ServesNow).
var (
	_ routing.NowRouter     = (*GroupFollower)(nil)
	_ routing.NowRouter     = ReplicaFollower{}
	_ routing.NowRouter     = (*Generations)(nil)
	_ routing.StandbyReader = (*Generations)(nil)
)

// ServesNow implements routing.NowRouter: whether the serving generation
// routes p here at once (its follower tells, without waiting), and that
// generation. RouteWithEpoch asks the serving generation first, so it
// would answer the same.
func (g *Generations) ServesNow(p int32) (int, bool) {
	f, n, _ := g.current()
	if sn, ok := f.(routing.NowRouter); ok {
		if _, now := sn.ServesNow(p); now {
			return n, true
		}
	}
	return 0, false
}

// Connected implements routing.ConnectedRouter: whether the serving
// generation's table still follows its group (see kafkax.Group.Connected).
// A follower without a group (a full replica) is always connected.
func (g *Generations) Connected() bool {
	f, _, _ := g.current()
	if cr, ok := f.(routing.ConnectedRouter); ok {
		return cr.Connected()
	}
	return true
}

// generation is a running follower and its generation number.
type generation struct {
	f Follower
	n int
}

// others returns the running followers other than f, newest generation
// first.
func (g *Generations) others(f Follower) []generation {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []generation
	for o, n := range g.running {
		if o != f {
			out = append(out, generation{o, n})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].n > out[j].n })
	return out
}

// Ready reports nil once a generation serves and is caught up.
func (g *Generations) Ready() error {
	f, _, _ := g.current()
	if f == nil {
		return ErrNoGeneration
	}
	return f.Ready()
}

// Owned returns the serving generation's partitions (nil: all, or none
// while no generation serves).
func (g *Generations) Owned() []int32 {
	if f, _, _ := g.current(); f != nil {
		return f.Owned()
	}
	return []int32{}
}

// Standby returns the partitions that the serving generation keeps warm
// for other instances (see Standby); nil in the full-replica mode.
func (g *Generations) Standby() []int32 {
	if s := g.servingStandby(); s != nil {
		return s.Warm()
	}
	return nil
}

// ReadIndex implements routing.StandbyReader through the serving
// generation's standby (see Standby.ReadIndex).
func (g *Generations) ReadIndex(ctx context.Context, p int32) (func(), error) {
	if s := g.servingStandby(); s != nil {
		return s.ReadIndex(ctx, p)
	}
	return nil, ErrNotWarm
}

// StandbyOf implements routing.StandbyReader: the instances that keep
// partition p of the serving generation warm, by its table.
func (g *Generations) StandbyOf(p int32) []kafkax.Member {
	if s := g.servingStandby(); s != nil {
		return StandbyMembers(s.Assignment(), p, s.Count)
	}
	return nil
}

// servingStandby returns the serving generation's Standby, or nil.
func (g *Generations) servingStandby() *Standby {
	f, _, _ := g.current()
	return standbyOf(f)
}

// standbyOf returns f's Standby: nil unless f is a GroupFollower with one.
func standbyOf(f Follower) *Standby {
	if gf, ok := f.(*GroupFollower); ok {
		return gf.Standby
	}
	return nil
}

// Assignment returns the serving generation's routing table.
func (g *Generations) Assignment() kafkax.Assignment {
	if f, _, _ := g.current(); f != nil {
		return f.Assignment()
	}
	return kafkax.Assignment{}
}

// resyncer is the part of kafkax.Group that a rebuild needs.
type resyncer interface {
	Resync(prepare func(owned []int32))
	Resyncing() bool
	Behind() int
}

// Rebuild drops this instance's view of the partitions it owns and reads
// them again from the serving generation's topics. Requests for those
// partitions wait (up to ROUTE_WAIT) until they are caught up again.
func (g *Generations) Rebuild() error {
	f, n, _ := g.current()
	if f == nil {
		return ErrNoGeneration
	}
	rs, ok := f.(resyncer)
	if !ok {
		return ErrRebuildUnsupported
	}
	now := time.Now().UTC()
	g.mu.Lock()
	g.rebuild = peer.ViewStatus{State: "rebuilding", Generation: n, StartedAt: &now}
	g.mu.Unlock()
	g.records.Store(0)
	g.counting.Store(true)
	drop := func(p int32) {
		if err := g.applier.Store.DropPartition(p); err != nil {
			g.log.Error("cannot drop a partition for the rebuild", "partition", p, "err", err)
		}
	}
	rs.Resync(func(owned []int32) {
		for _, p := range owned {
			drop(p)
		}
		if s := standbyOf(f); s != nil {
			s.Reset(drop) // read again from the start too
		}
		g.log.Info("view dropped for a rebuild; reading it again from Kafka", "generation", n, "partitions", len(owned))
	})
	return nil
}

// RebuildStatus returns the state of the latest rebuild (GET
// /admin/view/rebuild), without the instance.
func (g *Generations) RebuildStatus() peer.ViewStatus {
	f, _, _ := g.current()
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.rebuild
	st.Records = g.records.Load()
	if rs, ok := f.(resyncer); ok && st.State == "rebuilding" {
		st.Partitions, st.Behind = len(f.Owned()), rs.Behind()
		if !rs.Resyncing() && f.Ready() == nil {
			// The bulk load committed its batches without a sync: one
			// sync makes the rebuilt view durable.
			if syncer, ok := g.applier.Store.(interface{ Sync() error }); ok {
				if err := syncer.Sync(); err != nil {
					g.log.Error("cannot sync the rebuilt view", "err", err)
				}
			}
			now := time.Now().UTC()
			g.rebuild.State, g.rebuild.FinishedAt = "done", &now
			g.counting.Store(false)
			st.State, st.FinishedAt = "done", &now
			g.log.Info("view rebuilt", "records", st.Records, "took", now.Sub(*st.StartedAt))
		}
	}
	return st
}

// ReplicaFollower adapts a Replica (the full-replica mode) to Follower: it
// answers every partition itself once caught up, and never forwards.
type ReplicaFollower struct {
	*Replica
	Self kafkax.Member
}

// Route implements Follower.
func (r ReplicaFollower) Route(ctx context.Context, p int32) (kafkax.Member, bool, error) {
	return routing.Local{Self: r.Self, Serving: r.Serving}.Route(ctx, p)
}

// ServesNow implements routing.NowRouter: whether Route routes p here at
// once.
func (r ReplicaFollower) ServesNow(p int32) (int, bool) { return 0, r.Serving(p) }

// Owned implements Follower: a replica holds every partition.
func (ReplicaFollower) Owned() []int32 { return nil }

// Assignment implements Follower: a replica is in no group.
func (ReplicaFollower) Assignment() kafkax.Assignment { return kafkax.Assignment{} }

// GroupFollower adapts a kafkax.Group (the partitioned mode) to Follower.
// With a Standby, it also keeps other instances' partitions warm; the
// group's Assigned callback must then call Standby.Release first.
type GroupFollower struct {
	*kafkax.Group
	Config  *sarama.Config
	Brokers []string
	Standby *Standby // nil: no standby partitions
}

// Run implements Follower: it runs the group, and the standby until the
// group's Run returns.
func (g *GroupFollower) Run(ctx context.Context) error {
	if g.Standby == nil {
		return g.Group.Run(ctx, g.Config, g.Brokers)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Standby.Run(sctx)
	}()
	defer func() {
		stop()
		<-done
	}()
	return g.Group.Run(ctx, g.Config, g.Brokers)
}

// Keep implements keeper (see Standby.Keep).
func (g *GroupFollower) Keep() []int32 {
	if g.Standby == nil {
		return nil
	}
	return g.Standby.Keep()
}

// follower returns the follower of generation e, or nil when e does not
// run here.
func (g *Generations) follower(e int) Follower {
	g.mu.Lock()
	defer g.mu.Unlock()
	for f, n := range g.running {
		if n == e {
			return f
		}
	}
	return nil
}

// Holds implements routing.Holder: whether generation e still runs here
// and serves p.
func (g *Generations) Holds(p int32, e int) bool {
	fe := g.follower(e)
	return fe != nil && fe.Serving(p)
}

// RouteEpoch implements routing.EpochRouter: a request that another
// instance routed by generation e is served here if this instance runs e
// (still, or already) and serves p in it; otherwise it is routed by the
// serving generation.
func (g *Generations) RouteEpoch(ctx context.Context, p int32, e int) (kafkax.Member, bool, bool, int, error) {
	fe := g.follower(e)
	if fe != nil {
		quick, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		m, self, err := fe.Route(quick, p)
		cancel()
		if err == nil && self {
			return m, true, true, e, nil
		}
	}
	m, self, n, err := g.RouteWithEpoch(ctx, p)
	return m, self, n == e, n, err
}

// Interrupt implements routing.Interrupter for a GroupFollower (see
// kafkax.Group.Interrupt).
func (g *GroupFollower) Interrupt(ctx context.Context, p int32, e int) (context.Context, context.CancelFunc) {
	return g.Group.Interrupt(ctx, p, e)
}

// Interrupt implements routing.Interrupter: a read served by the follower
// of generation e is cut short when that follower stops serving p, or
// hands it over; at once when e no longer runs here. A follower that never
// loses a partition (a full replica) cuts nothing short.
func (g *Generations) Interrupt(ctx context.Context, p int32, e int) (context.Context, context.CancelFunc) {
	fe := g.follower(e)
	if fe == nil {
		ctx, cancel := context.WithCancel(ctx)
		cancel()
		return ctx, cancel
	}
	if in, ok := fe.(interface {
		Interrupt(ctx context.Context, p int32, e int) (context.Context, context.CancelFunc)
	}); ok {
		return in.Interrupt(ctx, p, e)
	}
	return context.WithCancel(ctx)
}

// Acquire implements routing.Acquirer for a GroupFollower (see
// kafkax.Group.Acquire).
func (g *GroupFollower) Acquire(p int32, e int) (func(), bool) { return g.Group.Acquire(p, e) }

// Acquire implements routing.Acquirer: it acquires p of the follower of
// generation e, so that a drain hands p over only once the request is done
// (a follower that cannot be drained, such as a full replica, or a
// generation that no longer runs, needs nothing).
func (g *Generations) Acquire(p int32, e int) (func(), bool) {
	fe := g.follower(e)
	if a, ok := fe.(interface {
		Acquire(p int32, e int) (func(), bool)
	}); ok {
		return a.Acquire(p, e)
	}
	return func() {}, true
}
