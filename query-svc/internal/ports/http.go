// Package ports maps HTTP onto query-svc's queries, and nothing more.
package ports

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/gorilla/mux"

	"profiles/events"
	"profiles/platform/httpx"
	"profiles/platform/peer"
	"profiles/platform/validate"
	"profiles/query-svc/internal/app"
)

// Queries are the use cases the HTTP port calls.
type Queries struct {
	GetProfile interface {
		HandleJSON(ctx context.Context, q app.GetProfile, dst []byte) (app.ProfileJSON, error)
	}
	SearchProfiles interface {
		HandleJSON(ctx context.Context, q app.SearchProfiles, dst []byte) ([]byte, error)
	}
	GetHistory interface {
		Handle(ctx context.Context, q app.GetHistory) ([]app.HistoryEntry, error)
	}
	WaitVisible interface {
		Handle(ctx context.Context, q app.WaitVisible) error
	}
}

// Placement wraps a handler so that it runs on the owner of a key's
// partition (see platform/routing); nil serves everything locally.
type Placement interface {
	Handler(partitionOf func(*http.Request) (int32, bool), h http.Handler) http.Handler
}

// HTTP serves the read side of the API.
type HTTP struct {
	Queries Queries
	// Routing places each request on its owner; PartitionOf maps a key (a
	// uid, or a normalized email) to its partition.
	Routing     Placement
	PartitionOf func(key string) int32
	Log         *slog.Logger
	// EmailKey turns an email into its index key (pii.Codec.EmailKey).
	EmailKey events.EmailKeyer
}

// Register adds the API routes to r. They match their paths without a
// regexp (httpx.Path): they are the routes of nearly every request.
func (h HTTP) Register(r *mux.Router) {
	httpx.Path(r, "/api/profile/{uid}").Handler(h.Routing.Handler(h.uidPartition, http.HandlerFunc(h.getProfile))).Methods(http.MethodGet, http.MethodHead)
	httpx.Path(r, "/api/profile/{uid}/history").Handler(h.Routing.Handler(h.uidPartition, http.HandlerFunc(h.getHistory))).Methods(http.MethodGet, http.MethodHead)
	httpx.Path(r, "/api/search").Handler(h.Routing.Handler(h.emailPartition, http.HandlerFunc(h.search))).Methods(http.MethodGet, http.MethodHead)
	httpx.Path(r, peer.RouteVisible).Handler(h.Routing.Handler(h.uidPartition, http.HandlerFunc(h.waitVisible))).Methods(http.MethodGet)
}

func (h HTTP) uidPartition(r *http.Request) (int32, bool) {
	uid := mux.Vars(r)["uid"]
	if validate.Var("uid", uid, validate.UIDTag) != nil {
		return 0, false
	}
	return h.PartitionOf(uid), true
}

func (h HTTP) emailPartition(r *http.Request) (int32, bool) {
	email := r.URL.Query().Get("email")
	if validate.Var("email", email, validate.EmailTag) != nil {
		return 0, false
	}
	return h.PartitionOf(h.EmailKey.EmailKey(email)), true
}

// uidQuery reads the {uid} of the path and the optional minVersion
// parameter; on a bad value it writes the problem and returns false.
func uidQuery(w http.ResponseWriter, r *http.Request) (uid string, minVer int64, ok bool) {
	uid = mux.Vars(r)["uid"]
	if p := validate.Var("uid", uid, validate.UIDTag); p != nil {
		httpx.WriteProblem(w, r, p)
		return "", 0, false
	}
	minVer, ok = minVersion(w, r)
	return uid, minVer, ok
}

func profileNotFound(w http.ResponseWriter, r *http.Request, detail string) {
	httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusNotFound, "profile-not-found", "Profile not found", detail))
}

// getProfile serves GET /api/profile/{uid}[?minVersion=N].
func (h HTTP) getProfile(w http.ResponseWriter, r *http.Request) {
	uid, minVersion, ok := uidQuery(w, r)
	if !ok {
		return
	}
	buf := answerBuffers.Get().(*[]byte)
	defer answerBuffers.Put(buf)
	prof, err := h.Queries.GetProfile.HandleJSON(r.Context(), app.GetProfile{UID: uid, MinVersion: minVersion}, (*buf)[:0])
	switch {
	case errors.Is(err, app.ErrNotFound):
		profileNotFound(w, r, "no profile with uid "+uid)
	case err != nil:
		h.fail(w, r, err, minVersion)
	default:
		hdr := w.Header()
		hdr.Set("ETag", httpx.ETag(prof.Version))
		hdr["Content-Type"] = contentJSON
		w.WriteHeader(http.StatusOK)
		body := append(prof.JSON, '\n') // as httpx.WriteJSON's encoder ends it
		_, _ = w.Write(body)
		if cap(body) <= maxAnswerBuffer {
			*buf = body[:0]
		}
	}
}

// contentJSON is the Content-Type of every JSON answer; a capacity of one
// makes a handler that adds to it append to a copy.
var contentJSON = []string{"application/json"}[:1:1]

// answerBuffers hold a GET's answer while it is written: w copies it (into
// the routing layer's buffer, or the connection's), so the buffer is free
// again once the handler returns.
var answerBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxAnswerBuffer bounds the buffers kept for the next answer.
const maxAnswerBuffer = 16 << 10

// history is the body of GET /api/profile/{uid}/history.
type history struct {
	UID    string             `json:"uid"`
	Events []app.HistoryEntry `json:"events"`
}

// getHistory serves GET /api/profile/{uid}/history[?minVersion=N]: the
// profile's events, oldest first. A deleted profile's history stays
// readable and ends with its ProfileDeleted entry.
func (h HTTP) getHistory(w http.ResponseWriter, r *http.Request) {
	uid, minVersion, ok := uidQuery(w, r)
	if !ok {
		return
	}
	entries, err := h.Queries.GetHistory.Handle(r.Context(), app.GetHistory{UID: uid, MinVersion: minVersion})
	switch {
	case errors.Is(err, app.ErrNotFound):
		profileNotFound(w, r, "no event of a profile with uid "+uid)
	case err != nil:
		h.fail(w, r, err, minVersion)
	default:
		httpx.WriteJSON(w, http.StatusOK, history{UID: uid, Events: entries})
	}
}

// search serves GET /api/search?email=[&uid=U&minVersion=N].
func (h HTTP) search(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	email := q.Get("email")
	if p := validate.Var("email", email, validate.EmailTag); p != nil {
		httpx.WriteProblem(w, r, p)
		return
	}
	minVersion, ok := minVersion(w, r)
	if !ok {
		return
	}
	uid := q.Get("uid")
	if uid != "" {
		if p := validate.Var("uid", uid, validate.UIDTag); p != nil {
			httpx.WriteProblem(w, r, p)
			return
		}
	}
	buf := answerBuffers.Get().(*[]byte)
	defer answerBuffers.Put(buf)
	found, err := h.Queries.SearchProfiles.HandleJSON(r.Context(), app.SearchProfiles{Email: email, UID: uid, MinVersion: minVersion}, (*buf)[:0])
	if err != nil {
		h.fail(w, r, err, minVersion)
		return
	}
	w.Header()["Content-Type"] = contentJSON
	w.WriteHeader(http.StatusOK)
	body := append(found, '\n') // as httpx.WriteJSON's encoder ends it
	_, _ = w.Write(body)
	if cap(body) <= maxAnswerBuffer {
		*buf = body[:0]
	}
}

// waitVisible serves GET peer.RouteVisible?minVersion=N[&email=E...]: 204
// once the write of the uid at version N is visible by uid and under each
// email in search (see app.WaitVisible). Every email's index entry must be
// in the uid's partition, which this instance serves: a writer asks this
// only for a profile whose uid it placed with its email.
func (h HTTP) waitVisible(w http.ResponseWriter, r *http.Request) {
	uid, minVersion, ok := uidQuery(w, r)
	if !ok {
		return
	}
	if minVersion < 1 {
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusBadRequest, "invalid-parameter", "Invalid parameter",
			"minVersion must be a positive integer"))
		return
	}
	emails := r.URL.Query()["email"]
	part := h.PartitionOf(uid)
	for _, email := range emails {
		if p := validate.Var("email", email, validate.EmailTag); p != nil {
			httpx.WriteProblem(w, r, p)
			return
		}
		if h.PartitionOf(h.EmailKey.EmailKey(email)) != part {
			httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusBadRequest, "invalid-parameter", "Invalid parameter",
				"an email's index entry is not in the uid's partition; wait for it with GET /api/search?email=E&uid=U&minVersion=N"))
			return
		}
	}
	if err := h.Queries.WaitVisible.Handle(r.Context(), app.WaitVisible{UID: uid, MinVersion: minVersion, Emails: emails}); err != nil {
		h.fail(w, r, err, minVersion)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Waits reports whether a read may wait for the view, for routing.Routing:
// only one with minVersion does. Any query that holds a percent escape
// counts too, since it may spell minVersion escaped.
func Waits(r *http.Request) bool {
	q := r.URL.RawQuery
	return strings.Contains(q, "minVersion") || strings.Contains(q, "%")
}

func minVersion(w http.ResponseWriter, r *http.Request) (int64, bool) {
	if r.URL.RawQuery == "" {
		return 0, true // no parameters: nothing to parse
	}
	s := r.URL.Query().Get("minVersion")
	if s == "" {
		return 0, true
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusBadRequest, "invalid-parameter", "Invalid parameter",
			"minVersion must be a non-negative integer"))
		return 0, false
	}
	return v, true
}

func (h HTTP) fail(w http.ResponseWriter, r *http.Request, err error, minVersion int64) {
	if errors.Is(err, app.ErrNotYet) {
		w.Header().Set("Retry-After", "1")
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusServiceUnavailable, "version-not-yet-visible", "Version not yet visible",
			"the view has not reached version "+strconv.FormatInt(minVersion, 10)+" yet"))
		return
	}
	h.Log.ErrorContext(r.Context(), "query failed", "route", httpx.Route(r), "err", err)
	httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusInternalServerError, "", "", "the query failed; see the service log"))
}
