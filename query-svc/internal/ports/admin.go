package ports

import (
	"errors"
	"net/http"

	"github.com/gorilla/mux"

	"profiles/platform/httpx"
	"profiles/query-svc/internal/follower"
)

// Rebuilder is what the admin port needs of the view's follower.
type Rebuilder interface {
	Rebuild() error
	RebuildStatus() follower.RebuildStatus
}

// Admin serves the operator endpoints of one instance (the replay CLI's
// `views` command calls them). They are not forwarded: each instance
// answers for its own view.
type Admin struct {
	Views    Rebuilder
	Instance string
}

// adminStatus is RebuildStatus with the instance that answers.
type adminStatus struct {
	Instance string `json:"instance"`
	follower.RebuildStatus
}

// Register adds POST and GET /admin/view/rebuild to r.
func (a Admin) Register(r *mux.Router) {
	r.HandleFunc("/admin/view/rebuild", a.startRebuild).Methods(http.MethodPost)
	r.HandleFunc("/admin/view/rebuild", a.rebuildStatus).Methods(http.MethodGet)
}

func (a Admin) startRebuild(w http.ResponseWriter, r *http.Request) {
	err := a.Views.Rebuild()
	switch {
	case errors.Is(err, follower.ErrRebuildUnsupported):
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusConflict, "rebuild-unsupported", "", err.Error()))
	case errors.Is(err, follower.ErrNoGeneration):
		w.Header().Set("Retry-After", "1")
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusServiceUnavailable, "not-ready", "", err.Error()))
	case err != nil:
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusInternalServerError, "", "", err.Error()))
	default:
		httpx.WriteJSON(w, http.StatusAccepted, adminStatus{a.Instance, a.Views.RebuildStatus()})
	}
}

func (a Admin) rebuildStatus(w http.ResponseWriter, _ *http.Request) {
	httpx.WriteJSON(w, http.StatusOK, adminStatus{a.Instance, a.Views.RebuildStatus()})
}
