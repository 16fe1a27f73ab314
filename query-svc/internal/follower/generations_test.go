package follower

import (
	"context"
	"io"
	"log/slog"
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
