package follower

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"profiles/platform/kafkax"
)

var (
	standbyPartitions = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "profiles_query_standby_partitions",
		Help: "Partitions this instance keeps warm in its view for other instances (STANDBYS), without serving them.",
	})
	standbyErrors = promauto.NewCounter(prometheus.CounterOpts{
		Name: "profiles_query_standby_read_errors_total",
		Help: "Times the reading of the standby partitions stopped on an error (a data key not readable yet, a full disk, a broker away) and started again.",
	})
	standbyCaughtUp = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "profiles_query_standby_partitions_caught_up",
		Help: "Standby partitions whose view has reached the end they had when their reading started.",
	})
)

// StandbysOf returns the partitions that member self keeps warm in a
// group with assignment a, when every partition is kept warm on count
// instances besides its owner (see standbyPositions). It returns nil when
// a is not stable, self is not a member, or count < 1.
func StandbysOf(a kafkax.Assignment, self string, count int) []int32 {
	n := len(a.Members) // sorted by ID
	i := slices.IndexFunc(a.Members, func(m kafkax.MemberAssignment) bool { return m.ID == self })
	if count < 1 || a.State != "Stable" || i < 0 {
		return nil
	}
	var out []int32
	for j, m := range a.Members {
		for _, p := range m.Partitions {
			if slices.Contains(standbyPositions(j, n, p, count), i) {
				out = append(out, p)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// StandbyMembers returns the members that keep partition p warm in a
// group with assignment a (see StandbysOf), nearest first; none when a is
// not stable or nobody owns p.
func StandbyMembers(a kafkax.Assignment, p int32, count int) []kafkax.Member {
	if count < 1 || a.State != "Stable" {
		return nil
	}
	for j, m := range a.Members {
		if slices.Contains(m.Partitions, p) {
			var out []kafkax.Member
			for _, k := range standbyPositions(j, len(a.Members), p, count) {
				out = append(out, a.Members[k].Member)
			}
			return out
		}
	}
	return nil
}

// standbyPositions returns the positions, among n members sorted by ID,
// of the standbys of partition p of the member at position j. The members
// form a ring; the standbys are count of the other n-1, starting after j
// at p mod (n-1) positions on, so that one member's partitions have their
// standbys spread over all the others, and a member that fails leaves
// every survivor a share of warm partitions. With two members and count 1,
// each keeps the other's partitions.
func standbyPositions(j, n int, p int32, count int) []int {
	if n < 2 {
		return nil
	}
	out := make([]int, 0, min(count, n-1))
	for k := range min(count, n-1) {
		out = append(out, (j+1+(int(p)+k)%(n-1))%n)
	}
	return out
}

// Standby keeps partitions that another instance owns warm in this
// instance's view: it reads them with kafkax.Read and applies them
// exactly as the owner does, from the view's own offsets, but never
// serves them. When the group later gives one of them to this instance,
// its catch-up is the tail since the last batch, not the whole partition:
// a failover or a rebalance is a routing change, not a rebuild.
//
// A partition is read either by Standby or by the group, never by both:
// Release, which the group's Assigned callback calls before the session
// reads the view's offsets, stops the reading of every partition the
// session owns and returns only once no batch of theirs is being applied.
//
// Use it with Run, once; its methods are safe for concurrent use. A zero
// Count keeps nothing warm.
type Standby struct {
	Applier Applier
	Client  sarama.Client
	// Topics are the group's topics; every one is read for each standby
	// partition (they are co-partitioned).
	Topics []string
	// Self is this instance's member ID.
	Self string
	// Count is how many instances besides the owner keep each partition
	// warm (STANDBYS).
	Count int
	// Assignment returns the group's latest routing table.
	Assignment func() kafkax.Assignment
	// Ready, if set, reports whether the partitions this instance owns
	// are caught up: no standby partition starts being read before, so
	// that a start or a failover serves what it owns first.
	Ready func() error
	Log   *slog.Logger
	// Settle, if set, drops the data of the partitions that are neither
	// owned nor kept any more (Keep). It is called once the standby
	// partitions of a new session's table are read, never under a lock
	// of Standby's.
	Settle func(ctx context.Context)

	stable atomic.Pointer[kafkax.Assignment] // the latest stable table read

	mu       sync.Mutex
	owned    map[int32]bool // the partitions of the group's latest session
	previous []int32        // those of the session before it
	released bool           // Release has run: this process had a session
	warm     []int32        // read now, sorted
	stop     func()         // stops the current reading and waits for it
	serving  map[int32]int  // standby reads in flight (ReadIndex), by partition
	served   *sync.Cond     // signalled when a standby read ends
}

// standbyRetry is the pause before the reading starts again after an
// error (a data key not readable yet, a full disk, a broker away).
var standbyRetry = time.Second

// Run follows the group's assignment until ctx ends, reading the standby
// partitions that it gives this instance.
func (s *Standby) Run(ctx context.Context) error {
	defer s.set(nil)
	for ctx.Err() == nil {
		s.update(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

// update starts reading the standby partitions of the latest assignment,
// minus those the group gave this instance, if they changed.
func (s *Standby) update(ctx context.Context) {
	a := s.Assignment()
	if a.State == "Stable" {
		s.stable.Store(&a)
	}
	if a.State != "Stable" || (s.Ready != nil && s.Ready() != nil) {
		return // keep what is read until the group settles and its partitions are served
	}
	want := StandbysOf(a, s.Self, s.Count)
	s.mu.Lock()
	want = slices.DeleteFunc(want, func(p int32) bool { return s.owned[p] })
	if !slices.Equal(want, s.warm) || (s.stop == nil && len(want) > 0) {
		s.restartLocked(ctx, want)
	}
	settle := len(s.previous) > 0 && s.Count > 0
	s.previous = nil // Keep no longer holds on to them
	s.mu.Unlock()
	if settle && s.Settle != nil {
		s.Settle(ctx)
	}
}

// restartLocked stops the current reading and starts one of parts.
func (s *Standby) restartLocked(ctx context.Context, parts []int32) {
	if s.stop != nil {
		s.stop()
		s.stop = nil
	}
	if !slices.Equal(parts, s.warm) && len(parts) > 0 {
		s.Log.Info("keeping partitions warm for other instances", "partitions", parts, "standbys", s.Count)
	}
	s.warm = parts
	standbyPartitions.Set(float64(len(parts)))
	standbyCaughtUp.Set(0)
	if len(parts) == 0 {
		return
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	s.stop = func() {
		cancel()
		<-done
	}
	go func() {
		defer close(done)
		s.read(rctx, parts)
	}()
}

// read reads parts of every topic until ctx ends, starting again after
// an error.
func (s *Standby) read(ctx context.Context, parts []int32) {
	// CaughtUp runs on the reading's goroutines, which a stop waits for
	// under s.mu: it must not take s.mu.
	var caught atomic.Int64
	var warned time.Time
	for ctx.Err() == nil {
		caught.Store(0)
		if err := s.readRound(ctx, parts, &caught); err != nil && ctx.Err() == nil {
			standbyErrors.Inc()
			if time.Since(warned) >= 30*time.Second { // it tries every second
				warned = time.Now()
				s.Log.Warn("standby partitions cannot be read; trying again every second", "partitions", parts, "err", err)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(standbyRetry):
		}
	}
}

// readRound reads parts of every topic until ctx ends or the read of one
// topic fails, which stops the others, and returns the first error. The
// topics share one consumer (kafkax.Fetcher): a commit to any of them
// wakes one fetch of the warm partitions, not one per topic.
func (s *Standby) readRound(ctx context.Context, parts []int32, caught *atomic.Int64) error {
	fetcher, err := kafkax.NewFetcher(s.Client)
	if err != nil {
		return fmt.Errorf("consumer of the warm partitions: %w", err)
	}
	defer fetcher.Close() // after every Read has returned: wg.Wait below
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(s.Topics))
	for i, topic := range s.Topics {
		wg.Go(func() {
			errs[i] = kafkax.Read(ctx, s.Client, kafkax.ReadOptions{
				Topic:      topic,
				Partitions: parts,
				Fetcher:    fetcher,
				Start:      func(p int32) (int64, error) { return s.Applier.Start(topic, p) },
				Handle: func(ctx context.Context, p int32, recs []*sarama.ConsumerMessage) error {
					return s.Applier.Handle(ctx, topic, p, recs)
				},
				CaughtUp: func(int32) {
					standbyCaughtUp.Set(float64(caught.Add(1) / int64(len(s.Topics))))
				},
			})
			if errs[i] != nil {
				cancel() // the others start again with it
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// set stops the reading and reads parts instead (nil: nothing).
func (s *Standby) set(parts []int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.restartLocked(context.Background(), parts)
}

// Release is the group's Assigned callback: owned are the partitions of
// the new session. It stops reading any of them as a standby, and returns
// once no batch of theirs is being applied, so that the session reads
// the view's offsets after the last standby batch. The other standby
// partitions are read on, from where they were.
func (s *Standby) Release(owned []int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.previous = s.previous[:0]
	for p := range s.owned {
		s.previous = append(s.previous, p)
	}
	if !s.released && s.Count > 0 {
		// The first session of this process: the view may hold what it
		// owned and kept warm before a restart. Keep holds on to all of
		// it until the first table is read, and then drops only what is
		// neither owned nor warm by that table, so that a partition still
		// warm here resumes from its offset instead of from the start.
		s.previous = append(s.previous, s.held()...)
	}
	s.released = true
	s.owned = make(map[int32]bool, len(owned))
	for _, p := range owned {
		s.owned[p] = true
	}
	if !slices.ContainsFunc(s.warm, func(p int32) bool { return s.owned[p] }) {
		return
	}
	if s.stop != nil {
		s.stop()
		s.stop = nil
	}
	s.warm = nil // the next update reads the rest again, from where it was
	standbyPartitions.Set(0)
}

// held returns the partitions of which the view holds any of the topics.
func (s *Standby) held() []int32 {
	byTopic, err := s.Applier.Store.Held()
	if err != nil {
		s.Log.Error("cannot list the view's partitions; those kept warm before the restart are read again", "err", err)
		return nil
	}
	var out []int32
	for _, t := range s.Topics {
		for _, p := range byTopic[t] {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// Preferred implements kafkax.GroupOptions.Prefer: when the owner of p
// in the latest stable table is not among members (it left the group),
// the members that kept p warm by that table, nearest first, so that the
// plan gives p to one that has only its tail to read. Otherwise nil: p
// stays with its owner, or wherever the sticky plan puts it.
func (s *Standby) Preferred(p int32, members []string) []string {
	a := s.stable.Load()
	if a == nil || s.Count < 1 {
		return nil
	}
	for _, m := range a.Members {
		if slices.Contains(m.Partitions, p) && slices.Contains(members, m.ID) {
			return nil // its owner is still here
		}
	}
	var out []string
	for _, m := range StandbyMembers(*a, p, s.Count) {
		if slices.Contains(members, m.ID) {
			out = append(out, m.ID)
		}
	}
	return out
}

// ErrNotWarm is returned by ReadIndex for a partition this instance does
// not keep warm now.
var ErrNotWarm = errors.New("this instance keeps no warm copy of the partition")

// standbyReadWait bounds how long ReadIndex waits for the view to reach
// the read index.
var standbyReadWait = 2 * time.Second

// ReadIndex lets this instance serve a read of partition p, which it keeps
// warm but does not own, with the guarantee an owner gives: it reads the
// last stable offset of p in every topic (one ListOffsets request), and
// returns once the view has applied everything before it, or once only
// transaction markers lie between (kafkax.Drained). Every write that was
// acknowledged before the call was committed below that offset (a write
// is acknowledged once its snapshot is read, read_committed, by a view),
// so an answer read from the view afterwards reflects all of them: the
// read is linearizable without a lease, and needs no owner (a read index,
// as Raft's followers serve reads). The caller serves the read and then
// calls release; until then the view keeps p's data. It fails with
// ErrNotWarm when p is not warm here, and with the context's or Kafka's
// error when the view did not get there within standbyReadWait.
func (s *Standby) ReadIndex(ctx context.Context, p int32) (release func(), err error) {
	s.mu.Lock()
	if !slices.Contains(s.warm, p) || s.stop == nil {
		s.mu.Unlock()
		return nil, ErrNotWarm
	}
	if s.serving == nil {
		s.serving, s.served = map[int32]int{}, sync.NewCond(&s.mu)
	}
	s.serving[p]++
	s.mu.Unlock()
	release = func() {
		s.mu.Lock()
		if s.serving[p]--; s.serving[p] == 0 {
			delete(s.serving, p)
		}
		s.served.Broadcast()
		s.mu.Unlock()
	}
	if err := s.readIndex(ctx, p); err != nil {
		release()
		return nil, err
	}
	return release, nil
}

func (s *Standby) readIndex(ctx context.Context, p int32) error {
	ctx, cancel := context.WithTimeout(ctx, standbyReadWait)
	defer cancel()
	claims := make(map[string][]int32, len(s.Topics))
	for _, t := range s.Topics {
		claims[t] = []int32{p}
	}
	ends, err := kafkax.ListOffsets(s.Client, sarama.OffsetNewest, sarama.ReadCommitted, claims)
	if err != nil {
		return fmt.Errorf("read index of partition %d: %w", p, err)
	}
	for _, topic := range s.Topics {
		end, probed := ends[topic][p], time.Time{}
		for {
			next, ok, err := s.Applier.Store.Offset(topic, p)
			if err != nil {
				return err
			}
			if !ok {
				next = 0
			}
			if next >= end {
				break
			}
			if time.Since(probed) >= 50*time.Millisecond {
				probed = time.Now()
				if drained, err := kafkax.Drained(s.Client, topic, p, next, end); err == nil && drained {
					break
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("the warm copy of %s/%d is at %d, short of its read index %d: %w", topic, p, next, end, ctx.Err())
			case <-time.After(2 * time.Millisecond):
			}
		}
	}
	return nil
}

// Keep returns the partitions whose data the view keeps although this
// instance does not own them: those read as a standby, and, until the
// next update has read the new table, those of the session before the
// latest one, which it may keep warm (dropping them at the session's
// start would read them again from the start).
func (s *Standby) Keep() []int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Count < 1 {
		return nil
	}
	out := append(slices.Clone(s.warm), s.previous...)
	for p := range s.serving {
		out = append(out, p) // a standby read in flight, of a partition warm when it began
	}
	return out
}

// Warm returns the partitions read as a standby now.
func (s *Standby) Warm() []int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.warm)
}

// Reset stops the reading and drops the data of the standby partitions,
// and of the partitions the view keeps from the session before the latest
// one, so that whoever reads them next reads them again from the start (a
// rebuild of the view).
func (s *Standby) Reset(drop func(p int32)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop != nil {
		s.stop()
		s.stop = nil
	}
	// The partitions read as a standby now, and those the view keeps from
	// the session before the latest one (Keep): until the next update reads
	// the new table, a partition owned in that session is in neither the
	// warm set nor the owned one, and if kept it could come back to this
	// instance with its data from before the rebuild, never read again.
	gone := slices.Concat(s.warm, s.previous)
	s.warm, s.previous = nil, nil // no standby read starts any more
	for len(s.serving) > 0 {
		s.served.Wait() // nor is one in flight when its data goes
	}
	for _, p := range gone {
		drop(p)
	}
	standbyPartitions.Set(0)
}
