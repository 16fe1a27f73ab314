package routing

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"profiles/platform/httpx"
	"profiles/platform/kafkax"
)

// Local is the Router of an instance that serves every partition itself
// (query-svc's full-replica mode): a request waits until the instance is
// serving its partition, and is never forwarded.
type Local struct {
	Self    kafkax.Member
	Serving func(p int32) bool
}

// Route implements Router.
func (l Local) Route(ctx context.Context, p int32) (kafkax.Member, bool, error) {
	for !l.Serving(p) {
		select {
		case <-ctx.Done():
			return kafkax.Member{}, false, fmt.Errorf("%w (partition %d still catching up)", kafkax.ErrNoOwner, p)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return l.Self, true, nil
}

// ServesNow implements NowRouter.
func (l Local) ServesNow(p int32) (int, bool) { return 0, l.Serving(p) }

// Holds implements Holder.
func (l Local) Holds(p int32, _ int) bool { return l.Serving(p) }

// Membership is what the debug endpoint shows of a group member.
type Membership interface {
	Assignment() kafkax.Assignment
	Owned() []int32
	Ready() error
}

// DebugHandler serves GET /debug/assignment: this instance's view of the
// cluster (members, their addresses and partitions, what it owns and
// whether it has caught up), plus whatever extra returns.
func DebugHandler(self kafkax.Member, mode string, m Membership, extra func() map[string]any) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		out := map[string]any{"self": self, "mode": mode}
		if m != nil {
			out["group"] = m.Assignment()
			out["owned"] = m.Owned()
			ready := "ready"
			if err := m.Ready(); err != nil {
				ready = err.Error()
			}
			out["ready"] = ready
		}
		if extra != nil {
			for k, v := range extra() {
				out[k] = v
			}
		}
		httpx.WriteJSON(w, http.StatusOK, out)
	}
}

// TablePath is where an instance serves its routing table (TableHandler).
// It is public, like /metrics, so that the front door, which holds no
// token, can read it: it names the instances and their partitions, which
// X-Served-By already shows to every client, and nothing of the data.
const TablePath = "/routing"

// Table is what TablePath serves: what a client needs to send a request
// straight to the owner of its key, as a Kafka client sends a record to
// the leader of its partition.
type Table struct {
	// Self is the instance that answered.
	Self kafkax.Member `json:"self"`
	// Mode is "partitioned", or "full" (every query-svc instance serves
	// every partition, and Members is empty).
	Mode string `json:"mode"`
	// Partitions is the number of partitions of the group's topics: a
	// key's partition is kafkax.Partition(key, Partitions).
	Partitions int32 `json:"partitions"`
	// State is the group state as this instance last read it; only a
	// "Stable" group's Members name the owners.
	State   string        `json:"state"`
	Members []TableMember `json:"members"`
}

// TableMember is one member of the group and its partitions.
type TableMember struct {
	kafkax.Member
	Partitions []int32 `json:"partitions"`
}

// TableHandler serves GET TablePath: this instance's view of its group
// (m's Assignment; none when m is nil), for keys spread over partitions.
func TableHandler(self kafkax.Member, mode string, partitions int32, m interface{ Assignment() kafkax.Assignment }) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		t := Table{Self: self, Mode: mode, Partitions: partitions, Members: []TableMember{}}
		if m != nil {
			a := m.Assignment()
			t.State = a.State
			for _, ma := range a.Members {
				t.Members = append(t.Members, TableMember{Member: ma.Member, Partitions: ma.Partitions})
			}
		}
		w.Header().Set("Cache-Control", "no-store")
		httpx.WriteJSON(w, http.StatusOK, t)
	}
}
