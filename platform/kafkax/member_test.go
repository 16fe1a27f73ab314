package kafkax

import (
	"reflect"
	"testing"

	"github.com/IBM/sarama"
)

func TestUserDataRoundTrip(t *testing.T) {
	m := Member{ID: "query-svc-1", URL: "http://127.0.0.1:8092"}
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
			if err != nil || got != m || !reflect.DeepEqual(inner, tt.inner) {
				t.Fatalf("unwrap = %+v, %v, %v", got, inner, err)
			}
		})
	}
	if got, inner, err := unwrapUserData([]byte("foreign")); err != nil || got != (Member{}) || string(inner) != "foreign" {
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
	s := newMemberStrategy(sarama.NewBalanceStrategySticky(), Member{ID: "x"}, "snap")
	meta := func(id string, userData []byte) sarama.ConsumerGroupMemberMetadata {
		return sarama.ConsumerGroupMemberMetadata{Version: 1, Topics: []string{"snap", "idx"}, UserData: wrapUserData(Member{ID: id, URL: "http://" + id}, userData)}
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
