package routing

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"profiles/platform/kafkax"
)

type fixedAssignment kafkax.Assignment

func (f fixedAssignment) Assignment() kafkax.Assignment { return kafkax.Assignment(f) }

// The routing table names the members, their partitions and the partition
// count, and nothing else of the group.
func TestTableHandler(t *testing.T) {
	self := kafkax.Member{ID: "q0", URL: "http://q0:8082"}
	a := fixedAssignment{State: "Stable", Members: []kafkax.MemberAssignment{
		{Member: self, GroupMemberID: "q0-abc", Partitions: []int32{0, 2}},
		{Member: kafkax.Member{ID: "q1", URL: "http://q1:8082"}, GroupMemberID: "q1-def", Partitions: []int32{1}},
	}}
	for _, tt := range []struct {
		name string
		m    interface{ Assignment() kafkax.Assignment }
		want Table
	}{
		{"partitioned", a, Table{Self: self, Mode: "partitioned", Partitions: 3, State: "Stable", Members: []TableMember{
			{Member: self, Partitions: []int32{0, 2}},
			{Member: kafkax.Member{ID: "q1", URL: "http://q1:8082"}, Partitions: []int32{1}},
		}}},
		{"no group", nil, Table{Self: self, Mode: "full", Partitions: 3, Members: []TableMember{}}},
	} {
		rec := httptest.NewRecorder()
		TableHandler(self, tt.want.Mode, 3, tt.m)(rec, httptest.NewRequest(http.MethodGet, TablePath, nil))
		if rec.Code != http.StatusOK || rec.Header().Get("Cache-Control") != "no-store" {
			t.Fatalf("%s: %d, Cache-Control %q", tt.name, rec.Code, rec.Header().Get("Cache-Control"))
		}
		var raw struct{ Members []map[string]any }
		_ = json.Unmarshal(rec.Body.Bytes(), &raw)
		for _, m := range raw.Members {
			if _, ok := m["groupMemberId"]; ok {
				t.Errorf("%s: the table shows the Kafka member id: %s", tt.name, rec.Body)
			}
		}
		var got Table
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
	}
}
