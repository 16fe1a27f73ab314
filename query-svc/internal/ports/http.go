// Package ports maps HTTP onto query-svc's queries, and nothing more.
package ports

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/gorilla/mux"

	"profiles/events"
	"profiles/platform/httpx"
	"profiles/platform/validate"
	"profiles/query-svc/internal/app"
)

// Queries are the use cases the HTTP port calls.
type Queries struct {
	GetProfile interface {
		Handle(ctx context.Context, q app.GetProfile) (events.Profile, error)
	}
	SearchProfiles interface {
		Handle(q app.SearchProfiles) ([]events.Profile, error)
	}
}

// HTTP serves the read side of the API.
type HTTP struct {
	Queries Queries
	Log     *slog.Logger
}

// Register adds the API routes to r.
func (h HTTP) Register(r *mux.Router) {
	r.HandleFunc("/api/profile/{uid}", h.getProfile).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/api/search", h.search).Methods(http.MethodGet, http.MethodHead)
}

// getProfile serves GET /api/profile/{uid}[?minVersion=N].
func (h HTTP) getProfile(w http.ResponseWriter, r *http.Request) {
	uid := mux.Vars(r)["uid"]
	if p := validate.Var("uid", uid, validate.UIDTag); p != nil {
		httpx.WriteProblem(w, r, p)
		return
	}
	q := app.GetProfile{UID: uid}
	if s := r.URL.Query().Get("minVersion"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusBadRequest, "invalid-parameter", "Invalid parameter",
				"minVersion must be a non-negative integer"))
			return
		}
		q.MinVersion = v
	}
	prof, err := h.Queries.GetProfile.Handle(r.Context(), q)
	switch {
	case errors.Is(err, app.ErrNotFound):
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusNotFound, "profile-not-found", "Profile not found",
			"no profile with uid "+uid))
	case errors.Is(err, app.ErrNotYet):
		w.Header().Set("Retry-After", "1")
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusServiceUnavailable, "version-not-yet-visible", "Version not yet visible",
			"the view has not reached version "+strconv.FormatInt(q.MinVersion, 10)+" of "+uid+" yet"))
	case err != nil:
		h.fail(w, r, err)
	default:
		w.Header().Set("ETag", httpx.ETag(prof.Version))
		httpx.WriteJSON(w, http.StatusOK, prof)
	}
}

// search serves GET /api/search?email=.
func (h HTTP) search(w http.ResponseWriter, r *http.Request) {
	email := r.URL.Query().Get("email")
	if p := validate.Var("email", email, validate.EmailTag); p != nil {
		httpx.WriteProblem(w, r, p)
		return
	}
	found, err := h.Queries.SearchProfiles.Handle(app.SearchProfiles{Email: email})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, found)
}

func (h HTTP) fail(w http.ResponseWriter, r *http.Request, err error) {
	h.Log.Error("query failed", "path", r.URL.Path, "err", err)
	httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusInternalServerError, "", "", "the query failed; see the service log"))
}
