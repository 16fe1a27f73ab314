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
