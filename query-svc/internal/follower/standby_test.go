package follower

import (
	"log/slog"
	"slices"
	"testing"

	"profiles/platform/kafkax"
)

func table(state string, members ...kafkax.MemberAssignment) kafkax.Assignment {
	return kafkax.Assignment{State: state, Members: members}
}

func member(id string, parts ...int32) kafkax.MemberAssignment {
	return kafkax.MemberAssignment{Member: kafkax.Member{ID: id}, Partitions: parts}
}

// Every partition is kept warm on count members besides its owner, and
// one member's partitions are kept warm on all the others in turn, so that
// a failure leaves each survivor a share; nothing is kept warm while the
// group is not stable.
func TestStandbysOf(t *testing.T) {
	three := table("Stable", member("a", 0, 3), member("b", 1, 4), member("c", 2, 5))
	for _, tc := range []struct {
		name  string
		a     kafkax.Assignment
		self  string
		count int
		want  []int32
	}{
		{"two members keep each other's", table("Stable", member("a", 0, 2), member("b", 1, 3)), "a", 1, []int32{1, 3}},
		{"the other of two", table("Stable", member("a", 0, 2), member("b", 1, 3)), "b", 1, []int32{0, 2}},
		// a's 0 and 3 go to b and c; b's 1 and 4 to a and c; c's 2 and 5 to a and b.
		{"the first of three", three, "a", 1, []int32{1, 2}},
		{"the second of three", three, "b", 1, []int32{0, 5}},
		{"the third of three", three, "c", 1, []int32{3, 4}},
		{"two standbys of three: all the others'", three, "c", 2, []int32{0, 1, 3, 4}},
		{"more standbys than other members", three, "a", 5, []int32{1, 2, 4, 5}},
		{"alone", table("Stable", member("a", 0, 1, 2)), "a", 1, nil},
		{"none wanted", three, "a", 0, nil},
		{"a rebalance is under way", table("PreparingRebalance", member("a", 0), member("b", 1)), "a", 1, nil},
		{"not a member", three, "d", 1, nil},
		{"a member that owns nothing", table("Stable", member("a", 0, 1), member("b")), "b", 1, []int32{0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := StandbysOf(tc.a, tc.self, tc.count); !slices.Equal(got, tc.want) {
				t.Errorf("StandbysOf(%s, %d) = %v, want %v", tc.self, tc.count, got, tc.want)
			}
		})
	}
	// Every partition on exactly count members, never on its owner, and
	// StandbyMembers agrees.
	for count := 1; count <= 2; count++ {
		warm := map[int32]int{}
		for _, m := range three.Members {
			for _, p := range StandbysOf(three, m.ID, count) {
				if slices.Contains(m.Partitions, p) {
					t.Errorf("%s keeps its own partition %d warm", m.ID, p)
				}
				warm[p]++
			}
		}
		for p := range int32(6) {
			if warm[p] != count {
				t.Errorf("count %d: partition %d is warm on %d members", count, p, warm[p])
			}
			// StandbyMembers names the same members.
			for _, m := range three.Members {
				named := slices.ContainsFunc(StandbyMembers(three, p, count), func(s kafkax.Member) bool { return s.ID == m.ID })
				if keeps := slices.Contains(StandbysOf(three, m.ID, count), p); named != keeps {
					t.Errorf("count %d, partition %d: StandbyMembers names %s: %t; StandbysOf(%s) holds it: %t", count, p, m.ID, named, m.ID, keeps)
				}
			}
		}
	}
}

// A partition whose owner left the group is preferred on the members that
// kept it warm by the last stable table; one whose owner stays, or any
// partition before a stable table was read, is left to the sticky plan.
func TestPreferredAreTheStandbysOfALeftOwner(t *testing.T) {
	three := table("Stable", member("a", 0, 3), member("b", 1, 4), member("c", 2, 5))
	s := &Standby{Self: "a", Count: 1, Assignment: func() kafkax.Assignment { return three }}
	if got := s.Preferred(1, []string{"a", "c"}); got != nil {
		t.Fatalf("before any table: Preferred = %v, want nil", got)
	}
	s.stable.Store(&three)
	for _, tc := range []struct {
		name    string
		p       int32
		members []string
		want    []string
	}{
		// b's 1 and 4 are warm on a and c (TestStandbysOf).
		{"b left: its 1 to a", 1, []string{"a", "c"}, []string{"a"}},
		{"b left: its 4 to c", 4, []string{"a", "c"}, []string{"c"}},
		{"the owner stays", 0, []string{"a", "c"}, nil},
		{"b left and its standby too", 1, []string{"c"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.Preferred(tc.p, tc.members); !slices.Equal(got, tc.want) {
				t.Errorf("Preferred(%d, %v) = %v, want %v", tc.p, tc.members, got, tc.want)
			}
		})
	}
}

// heldStore is a Store that holds data of some partitions.
type heldStore struct {
	Store
	held map[string][]int32
}

func (h heldStore) Held() (map[string][]int32, error) { return h.held, nil }

// After a restart, the first session keeps what the view held from before
// (owned and warm then) until the first table says what is warm now; the
// next sessions keep only what they owned before.
func TestTheFirstSessionKeepsWhatTheViewHeldBeforeTheRestart(t *testing.T) {
	store := heldStore{held: map[string][]int32{"snap": {1, 3, 4}, "idx": {1, 3, 5}, "other": {9}}}
	for _, tc := range []struct {
		name  string
		count int
		want  [][]int32 // Keep after each Release
	}{
		{"a standby keeps them", 1, [][]int32{{1, 3, 4, 5}, {0}}},
		{"no standbys: only what the sessions own", 0, [][]int32{nil, nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Standby{Applier: Applier{Store: store}, Topics: []string{"snap", "idx"}, Count: tc.count, Log: slog.New(slog.DiscardHandler)}
			for i, owned := range [][]int32{{0}, {0, 2}} {
				s.Release(owned)
				got := s.Keep()
				slices.Sort(got)
				if !slices.Equal(got, tc.want[i]) {
					t.Fatalf("Keep after session %d = %v, want %v", i+1, got, tc.want[i])
				}
			}
		})
	}
}

// A rebuild's Reset drops what the view keeps from the session before the
// latest one too: until the next update reads the new table, a partition
// owned then is neither warm nor owned, and if kept it could come back to
// this instance in the next session with its data from before the
// rebuild, never read again (seen in the e2e rebuild test: an instance
// rebuilt its view and read nothing from Kafka).
func TestResetDropsThePreviousSessionsPartitionsToo(t *testing.T) {
	store := heldStore{held: map[string][]int32{}}
	s := &Standby{Applier: Applier{Store: store}, Topics: []string{"snap", "idx"}, Count: 1, Log: slog.New(slog.DiscardHandler)}
	s.Release([]int32{0, 2, 4})
	s.Release([]int32{1, 3, 5}) // the table of this session is not read yet
	var dropped []int32
	s.Reset(func(p int32) { dropped = append(dropped, p) })
	slices.Sort(dropped)
	if want := []int32{0, 2, 4}; !slices.Equal(dropped, want) {
		t.Fatalf("Reset dropped %v, want %v", dropped, want)
	}
	if kept := s.Keep(); len(kept) != 0 {
		t.Fatalf("Keep after Reset = %v, want nothing", kept)
	}
}
