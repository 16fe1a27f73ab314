package ports

import (
	"errors"
	"net/http"

	"github.com/gorilla/mux"

	"profiles/platform/httpx"
	"profiles/platform/peer"
	"profiles/query-svc/internal/follower"
)

// Admin serves the operator endpoints of one instance (the replay CLI's
// `views` command calls them, see platform/peer). They are not forwarded:
// each instance answers for its own view.
type Admin struct {
	Views    peer.Rebuilder
	Instance string
}

// Register adds POST and GET /admin/view/rebuild to r.
func (a Admin) Register(r *mux.Router) {
	r.Handle(peer.PathViewRebuild, peer.StartRebuildHandler(a.Views, a.Instance, rebuildFailed)).Methods(http.MethodPost)
	r.Handle(peer.PathViewRebuild, peer.RebuildStatusHandler(a.Views, a.Instance)).Methods(http.MethodGet)
}

// rebuildFailed answers a rebuild that could not start.
func rebuildFailed(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, follower.ErrRebuildUnsupported):
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusConflict, "rebuild-unsupported", "", err.Error()))
	case errors.Is(err, follower.ErrNoGeneration):
		w.Header().Set("Retry-After", "1")
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusServiceUnavailable, "not-ready", "", err.Error()))
	default:
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusInternalServerError, "", "", err.Error()))
	}
}
