package follower

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"profiles/platform/kafkax"
	"profiles/platform/topology"
)

// fakeFollower routes every partition to owner, or has no owner yet (it
// waits until ctx ends) when owner is nil.
type fakeFollower struct {
	owner *kafkax.Member
	self  bool
}

func (f fakeFollower) Route(ctx context.Context, p int32) (kafkax.Member, bool, error) {
	if f.owner == nil {
		<-ctx.Done()
		return kafkax.Member{}, false, kafkax.ErrNoOwner
	}
	return *f.owner, f.self, nil
}
func (f fakeFollower) Serving(int32) bool          { return f.owner != nil && f.self }
func (fakeFollower) Run(context.Context) error     { return nil }
func (fakeFollower) Ready() error                  { return nil }
func (fakeFollower) Owned() []int32                { return nil }
func (fakeFollower) Assignment() kafkax.Assignment { return kafkax.Assignment{} }

// During a switch, a partition the new generation has not caught up with
// is routed by the old one, and the answer says so: a forwarded request
// must carry the old generation as its epoch, or its receiver (already on
// the new generation, where it does not own the partition) waits for an
// ownership it will never get.
func TestRouteWithEpochNamesTheGenerationThatAnswered(t *testing.T) {
	q0, q1 := kafkax.Member{ID: "q0"}, kafkax.Member{ID: "q1"}
	for _, tc := range []struct {
		name       string
		old, new   fakeFollower
		wantOwner  string
		wantEpoch  int
		wantSelfOK bool
	}{
		{name: "new generation answers when it has an owner", old: fakeFollower{owner: &q0}, new: fakeFollower{owner: &q1}, wantOwner: "q1", wantEpoch: 2},
		{name: "old generation answers while the new one catches up", old: fakeFollower{owner: &q0}, new: fakeFollower{}, wantOwner: "q0", wantEpoch: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewGenerations(nil, topology.Config{}, Applier{}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
			g.serving, g.n = tc.new, 2
			g.running = map[Follower]int{tc.old: 1, tc.new: 2}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			m, _, epoch, err := g.RouteWithEpoch(ctx, 4)
			if err != nil || m.ID != tc.wantOwner || epoch != tc.wantEpoch {
				t.Fatalf("RouteWithEpoch = %s, epoch %d, %v; want %s, epoch %d", m.ID, epoch, err, tc.wantOwner, tc.wantEpoch)
			}
		})
	}
}

// A request routed by generation 1 to the instance that serves the
// partition there is served by it, even after it moved to generation 2.
func TestRouteEpochServesByTheForwardersGeneration(t *testing.T) {
	self, q1 := kafkax.Member{ID: "q0"}, kafkax.Member{ID: "q1"}
	oldGen, newGen := fakeFollower{owner: &self, self: true}, fakeFollower{owner: &q1}
	g := NewGenerations(nil, topology.Config{}, Applier{}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	g.serving, g.n = newGen, 2
	g.running = map[Follower]int{oldGen: 1, newGen: 2}
	m, isSelf, exact, epoch, err := g.RouteEpoch(context.Background(), 4, 1)
	if err != nil || !isSelf || !exact || epoch != 1 || m.ID != "q0" {
		t.Fatalf("RouteEpoch(gen 1) = %s self=%t exact=%t epoch=%d %v; want served here by generation 1", m.ID, isSelf, exact, epoch, err)
	}
	m, isSelf, exact, epoch, err = g.RouteEpoch(context.Background(), 4, 3)
	if err != nil || isSelf || exact || epoch != 2 || m.ID != "q1" {
		t.Fatalf("RouteEpoch(gen 3) = %s self=%t exact=%t epoch=%d %v; want q1 by generation 2, not exact", m.ID, isSelf, exact, epoch, err)
	}
}

// droppingStore records the partitions dropped; it holds partitions 0-3 of
// one topic.
type droppingStore struct {
	Store
	dropped []int32
}

func (s *droppingStore) Held() (map[string][]int32, error) {
	return map[string][]int32{"snapshots": {0, 1, 2, 3}}, nil
}
func (s *droppingStore) DropPartition(p int32) error { s.dropped = append(s.dropped, p); return nil }

// sessionFollower is in a session only from the call numbered from on.
type sessionFollower struct {
	fakeFollower
	owned       []int32
	calls, from int
}

func (f *sessionFollower) InSession(run func(owned []int32)) bool {
	f.calls++
	if f.calls < f.from {
		return false
	}
	run(f.owned)
	return true
}

// The data of partitions that moved away is dropped only within a session
// of the group: between two, the next Setup may be reading the view's
// offsets of the partitions it resumes, and a drop then would leave them
// starting past data that is gone.
func TestDropUnownedWaitsForASession(t *testing.T) {
	store := &droppingStore{}
	g := NewGenerations(nil, topology.Config{}, Applier{Store: store, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	f := &sessionFollower{owned: []int32{1, 3}, from: 2}
	g.running = map[Follower]int{f: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g.dropUnowned(ctx, f)
	if f.calls != 2 {
		t.Fatalf("InSession called %d times; want 2 (between sessions, then in one)", f.calls)
	}
	slices.Sort(store.dropped)
	if !slices.Equal(store.dropped, []int32{0, 2}) {
		t.Fatalf("dropped %v; want partitions 0 and 2", store.dropped)
	}
}

// nowFollower is a fakeFollower that also tells at once whether it serves.
type nowFollower struct{ fakeFollower }

func (f nowFollower) ServesNow(int32) (int, bool) { return 0, f.Serving(0) }

// ServesNow answers for the serving generation only, with its number: a
// read it routes here is held by that generation (Holds, Acquire).
func TestServesNowIsTheServingGenerations(t *testing.T) {
	self, q1 := kafkax.Member{ID: "q0"}, kafkax.Member{ID: "q1"}
	g := NewGenerations(nil, topology.Config{}, Applier{}, nil, slog.New(slog.DiscardHandler))
	if _, ok := g.ServesNow(4); ok {
		t.Fatal("no generation serves, yet ServesNow says here")
	}
	here, there := nowFollower{fakeFollower{owner: &self, self: true}}, nowFollower{fakeFollower{owner: &q1}}
	g.serving, g.n = here, 2
	g.running = map[Follower]int{there: 1, here: 2}
	if n, ok := g.ServesNow(4); !ok || n != 2 {
		t.Fatalf("ServesNow = %d, %t; want generation 2", n, ok)
	}
	g.serving, g.n = there, 3
	g.running = map[Follower]int{here: 2, there: 3}
	if _, ok := g.ServesNow(4); ok {
		t.Fatal("the serving generation routes elsewhere, yet ServesNow says here")
	}
}
