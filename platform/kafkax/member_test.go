package kafkax

import (
	"reflect"
	"testing"

	"github.com/IBM/sarama"
)

func TestUserDataRoundTrip(t *testing.T) {
	m := memberData{Member: Member{ID: "query-svc-1", URL: "http://127.0.0.1:8092"}, Held: map[int32]int64{0: 7, 11: 1 << 40}}
	tests := []struct {
		name  string
		inner []byte
	}{
		{"no inner data", nil},
		{"sticky strategy data", []byte{0, 0, 0, 1, 0, 5, 't', 'o', 'p', 'i', 'c'}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, inner, err := unwrapUserData(wrapUserData(m, tt.inner))
			if err != nil || !reflect.DeepEqual(got, m) || !reflect.DeepEqual(inner, tt.inner) {
				t.Fatalf("unwrap = %+v, %v, %v", got, inner, err)
			}
		})
	}
	if got, inner, err := unwrapUserData([]byte("foreign")); err != nil || !reflect.DeepEqual(got, memberData{}) || string(inner) != "foreign" {
		t.Fatalf("foreign data: %+v %q %v", got, inner, err)
	}
	if _, _, err := unwrapUserData(append([]byte("PRF1"), 0, 0, 9, 9)); err == nil {
		t.Fatal("truncated data accepted")
	}
}

func TestMirrorPlanCoPartitions(t *testing.T) {
	plan := sarama.BalanceStrategyPlan{
		"a": {"snap": {0, 2}},
		"b": {"snap": {1, 3}},
	}
	got := mirrorPlan(plan, "snap", map[string][]int32{"snap": {0, 1, 2, 3}, "idx": {0, 1, 2, 3}})
	want := sarama.BalanceStrategyPlan{
		"a": {"snap": {0, 2}, "idx": {0, 2}},
		"b": {"snap": {1, 3}, "idx": {1, 3}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("mirrorPlan = %v, want %v", got, want)
	}
}

func TestStickyPlanThroughWrapperKeepsMembersAndStickiness(t *testing.T) {
	topics := map[string][]int32{"snap": {0, 1, 2, 3, 4, 5}, "idx": {0, 1, 2, 3, 4, 5}}
	s := newMemberStrategy(sarama.NewBalanceStrategySticky(), GroupOptions{Self: Member{ID: "x"}, Topics: []string{"snap", "idx"}})
	meta := func(id string, userData []byte) sarama.ConsumerGroupMemberMetadata {
		return sarama.ConsumerGroupMemberMetadata{Version: 1, Topics: []string{"snap", "idx"}, UserData: wrapUserData(memberData{Member: Member{ID: id, URL: "http://" + id}}, userData)}
	}
	plan, err := s.Plan(map[string]sarama.ConsumerGroupMemberMetadata{"m1": meta("one", nil), "m2": meta("two", nil)}, topics)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan["m1"]["snap"]) != 3 || !reflect.DeepEqual(plan["m1"]["snap"], plan["m1"]["idx"]) {
		t.Fatalf("plan %v", plan)
	}
	// The assignment data carries each member's identity into its next join.
	data, err := s.AssignmentData("m1", plan["m1"], 1)
	if err != nil {
		t.Fatal(err)
	}
	m, inner, err := unwrapUserData(data)
	if err != nil || m.ID != "one" || len(inner) == 0 {
		t.Fatalf("assignment data: %+v %d %v", m, len(inner), err)
	}
	// A third member joins: sticky moves only what it must.
	data2, _ := s.AssignmentData("m2", plan["m2"], 1)
	_, inner2, _ := unwrapUserData(data2)
	plan2, err := s.Plan(map[string]sarama.ConsumerGroupMemberMetadata{
		"m1": meta("one", inner), "m2": meta("two", inner2), "m3": meta("three", nil),
	}, topics)
	if err != nil {
		t.Fatal(err)
	}
	kept := 0
	for _, member := range []string{"m1", "m2"} {
		before := map[int32]bool{}
		for _, p := range plan[member]["snap"] {
			before[p] = true
		}
		for _, p := range plan2[member]["snap"] {
			if before[p] {
				kept++
			}
		}
	}
	if kept != 4 || len(plan2["m3"]["snap"]) != 2 {
		t.Fatalf("not sticky: kept %d partitions, new member got %v (plan %v)", kept, plan2["m3"], plan2)
	}
}

// preferPlan swaps partitions whose preferred members got others' among
// themselves, and moves those that no swap places: a partition without a
// preference never moves, and one placed where it is preferred stays
// there.
func TestPreferPlanSwapsTowardsThePreferredMembers(t *testing.T) {
	members := map[string]Member{"ga": {ID: "a"}, "gb": {ID: "b"}, "gc": {ID: "c"}}
	for _, tc := range []struct {
		name   string
		plan   map[string][]int32 // group member id -> partitions
		prefer map[int32][]string // partition -> instance ids
		want   map[string][]int32
	}{
		{
			name: "a dead member's partitions go to their standbys",
			// d owned 6, 7, 8, 9 and left; the sticky plan spread them.
			plan:   map[string][]int32{"ga": {0, 1, 6, 7}, "gb": {2, 3, 8}, "gc": {4, 5, 9}},
			prefer: map[int32][]string{6: {"b"}, 7: {"c"}, 8: {"a"}, 9: {"a"}},
			want:   map[string][]int32{"ga": {0, 1, 8, 9}, "gb": {2, 3, 6}, "gc": {4, 5, 7}},
		},
		{
			name:   "no swap places them: they move, and the counts come out uneven",
			plan:   map[string][]int32{"ga": {0, 6}, "gb": {1, 7}, "gc": {2, 8}},
			prefer: map[int32][]string{6: {"b"}, 7: {"b"}, 8: {"b"}},
			want:   map[string][]int32{"ga": {0}, "gb": {1, 6, 7, 8}, "gc": {2}},
		},
		{
			name: "swaps first, then a move",
			// d owned 6, 7, 8 and left, and kept 6 and 8 warm on a.
			plan:   map[string][]int32{"ga": {0, 6}, "gb": {1, 7}, "gc": {2, 8}},
			prefer: map[int32][]string{6: {"a"}, 7: {"c"}, 8: {"a"}},
			want:   map[string][]int32{"ga": {0, 6, 8}, "gb": {1}, "gc": {2, 7}},
		},
		{
			name:   "the next preferred member",
			plan:   map[string][]int32{"ga": {0, 6}, "gb": {1, 7}, "gc": {2}},
			prefer: map[int32][]string{6: {"c", "b"}, 7: {"a"}},
			want:   map[string][]int32{"ga": {0, 7}, "gb": {1, 6}, "gc": {2}},
		},
		{
			name:   "no preference: the sticky plan as it is",
			plan:   map[string][]int32{"ga": {0, 3}, "gb": {1, 4}, "gc": {2, 5}},
			prefer: map[int32][]string{},
			want:   map[string][]int32{"ga": {0, 3}, "gb": {1, 4}, "gc": {2, 5}},
		},
		{
			name:   "a member the plan does not know",
			plan:   map[string][]int32{"ga": {0, 3}, "gb": {1, 4}, "gc": {2, 5}},
			prefer: map[int32][]string{3: {"z"}},
			want:   map[string][]int32{"ga": {0, 3}, "gb": {1, 4}, "gc": {2, 5}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := snapPlan(tc.plan)
			preferPlan(plan, "snap", members, func(p int32, ids []string) []string {
				if !reflect.DeepEqual(ids, []string{"a", "b", "c"}) {
					t.Errorf("members %v, want a b c", ids)
				}
				return tc.prefer[p]
			})
			if got := snapParts(plan); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("plan %v, want %v", got, tc.want)
			}
		})
	}
}

// heldPlan swaps partitions towards the members whose stores hold the most
// of them, keeping every member's count, and swaps nothing that gains
// nothing.
func TestHeldPlanSwapsTowardsTheStoresThatHoldThePartitions(t *testing.T) {
	for _, tc := range []struct {
		name string
		plan map[string][]int32         // group member id -> partitions
		held map[string]map[int32]int64 // group member id -> partition -> next offset
		want map[string][]int32
	}{
		{
			name: "a restarted member gets back what it holds",
			// b held 1, 3 and 5 before its stop; a took them over and holds
			// everything, further along. The sticky plan gave b 0, 2, 4.
			plan: map[string][]int32{"ga": {1, 3, 5}, "gb": {0, 2, 4}},
			held: map[string]map[int32]int64{
				"ga": {0: 900, 1: 900, 2: 900, 3: 900, 4: 900, 5: 900},
				"gb": {1: 850, 3: 870, 5: 899},
			},
			want: map[string][]int32{"ga": {0, 2, 4}, "gb": {1, 3, 5}},
		},
		{
			name: "the current owners are the furthest along: nothing moves",
			plan: map[string][]int32{"ga": {0, 1}, "gb": {2, 3}},
			held: map[string]map[int32]int64{"ga": {0: 10, 1: 10, 2: 4}, "gb": {2: 10, 3: 10, 0: 9}},
			want: map[string][]int32{"ga": {0, 1}, "gb": {2, 3}},
		},
		{
			name: "a tie is not a reason to move",
			plan: map[string][]int32{"ga": {0}, "gb": {1}},
			held: map[string]map[int32]int64{"ga": {0: 5, 1: 5}, "gb": {0: 5, 1: 5}},
			want: map[string][]int32{"ga": {0}, "gb": {1}},
		},
		{
			name: "a member that holds nothing keeps its count",
			// c is new; it costs the same wherever it goes, so what it got
			// stays, and a and b sort out the rest between themselves.
			plan: map[string][]int32{"ga": {0, 3}, "gb": {1, 2}, "gc": {4, 5}},
			held: map[string]map[int32]int64{"ga": {1: 50, 2: 50}, "gb": {0: 50, 3: 50}},
			want: map[string][]int32{"ga": {1, 2}, "gb": {0, 3}, "gc": {4, 5}},
		},
		{
			name: "less to read wins over more",
			// Both hold both; b is far behind in 0 but close in 1.
			plan: map[string][]int32{"ga": {1}, "gb": {0}},
			held: map[string]map[int32]int64{"ga": {0: 1000, 1: 1000}, "gb": {0: 10, 1: 990}},
			want: map[string][]int32{"ga": {0}, "gb": {1}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := snapPlan(tc.plan)
			heldPlan(plan, "snap", tc.held)
			if got := snapParts(plan); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("plan %v, want %v", got, tc.want)
			}
		})
	}
}

// Each join carries the offsets the store holds then, and the inner
// strategy's data of the last assignment; the assignment data carries no
// offsets.
func TestJoinsCarryTheHeldOffsetsAndTheLastAssignment(t *testing.T) {
	held := map[int32]int64{2: 40}
	s := newMemberStrategy(sarama.NewBalanceStrategySticky(), GroupOptions{
		Self: Member{ID: "one"}, Topics: []string{"snap"},
		Held: func() (map[int32]int64, error) { return held, nil },
	})
	data, err := s.SubscriptionUserData([]string{"snap"})
	if err != nil {
		t.Fatal(err)
	}
	d, inner, err := unwrapUserData(data)
	if err != nil || d.ID != "one" || !reflect.DeepEqual(d.Held, held) || inner != nil {
		t.Fatalf("first join: %+v %q %v", d, inner, err)
	}
	plan, err := s.Plan(map[string]sarama.ConsumerGroupMemberMetadata{"m1": {Version: 1, Topics: []string{"snap"}, UserData: data}}, map[string][]int32{"snap": {0, 1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	asg, err := s.AssignmentData("m1", plan["m1"], 1)
	if err != nil {
		t.Fatal(err)
	}
	if d, inner, _ := unwrapUserData(asg); d.Held != nil || d.ID != "one" || len(inner) == 0 {
		t.Fatalf("assignment data: %+v, %d bytes of the inner strategy's", d, len(inner))
	}
	s.OnAssignment(&sarama.ConsumerGroupMemberAssignment{UserData: asg}, 1)
	held = map[int32]int64{0: 1, 1: 2, 2: 41}
	data, _ = s.SubscriptionUserData([]string{"snap"})
	_, want, _ := unwrapUserData(asg)
	if d, inner, _ := unwrapUserData(data); !reflect.DeepEqual(d.Held, held) || !reflect.DeepEqual(inner, want) {
		t.Fatalf("next join: held %v, inner %q; want %v, %q", d.Held, inner, held, want)
	}
}

// snapPlan is a plan of the topic "snap" only, by group member id.
func snapPlan(parts map[string][]int32) sarama.BalanceStrategyPlan {
	plan := sarama.BalanceStrategyPlan{}
	for gid, ps := range parts {
		plan[gid] = map[string][]int32{"snap": append([]int32(nil), ps...)}
	}
	return plan
}

// snapParts is each member's partitions of "snap" in plan.
func snapParts(plan sarama.BalanceStrategyPlan) map[string][]int32 {
	got := map[string][]int32{}
	for gid, topics := range plan {
		got[gid] = topics["snap"]
	}
	return got
}
