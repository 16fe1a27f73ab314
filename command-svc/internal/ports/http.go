// Package ports maps HTTP onto command-svc's commands, and nothing more.
package ports

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"profiles/command-svc/internal/app"
	"profiles/events"
	"profiles/platform/auth"
	"profiles/platform/httpx"
	"profiles/platform/routing"
	"profiles/platform/validate"
)

// Commands are the use cases the HTTP port calls.
type Commands struct {
	ClaimEmail interface {
		Handle(context.Context, app.ClaimEmail) error
		Release(ctx context.Context, email, uid string) error
	}
	// State answers the internal GET of a profile's current state.
	State interface {
		Get(uid string) events.Profile
	}
	CreateProfile interface {
		Handle(context.Context, app.CreateProfile) (app.Result, error)
	}
	ChangeProfile interface {
		Handle(context.Context, app.ChangeProfile) (app.Result, error)
	}
	DeleteProfile interface {
		Handle(context.Context, app.DeleteProfile) (app.Result, error)
	}
}

// Placement wraps a handler so that it runs on the owner of a key's
// partition (see platform/routing).
type Placement interface {
	Handler(partitionOf func(*http.Request) (int32, bool), h http.Handler) http.Handler
}

// HeaderUID carries the uid that the instance which received a POST chose,
// when it forwards the POST to the owner of that uid's partition.
const HeaderUID = "X-Profiles-Uid"

// HTTP serves the write side of the API.
type HTTP struct {
	Commands Commands
	// Routing places each command on the owner of its uid's partition.
	Routing     Placement
	PartitionOf func(uid string) int32
	// NewUID returns a fresh profile uid.
	NewUID func() string
	// MaxBody limits a request body in bytes; 0 means httpx.DefaultMaxBody.
	MaxBody int64
	Log     *slog.Logger
	// EmailKey turns an email into the key of its claim (pii.Codec: an
	// HMAC of the normalized email).
	EmailKey events.EmailKeyer
}

// Register adds the API routes to r.
func (h HTTP) Register(r *mux.Router) {
	r.Handle("/api/profile", h.Routing.Handler(h.newUIDPartition, http.HandlerFunc(h.create))).Methods(http.MethodPost)
	r.Handle("/api/profile/{uid}", h.Routing.Handler(h.uidPartition, http.HandlerFunc(h.change))).Methods(http.MethodPut)
	r.Handle("/api/profile/{uid}", h.Routing.Handler(h.uidPartition, http.HandlerFunc(h.delete))).Methods(http.MethodDelete)
	// Between instances: email claims run on the owner of the email's
	// partition, and a profile's current state comes from its owner.
	r.Handle("/internal/claims", h.Routing.Handler(h.claimPartition, http.HandlerFunc(h.claim))).Methods(http.MethodPost, http.MethodDelete)
	r.Handle("/internal/profiles/{uid}", h.Routing.Handler(h.uidPartition, http.HandlerFunc(h.state))).Methods(http.MethodGet)
}

type claimBody struct {
	Email string `json:"email" validate:"required,max=254"`
	UID   string `json:"uid" validate:"required,uuid"`
}

// claimPartition reads the claim's email (the body stays readable) and
// places the request on the owner of its partition.
func (h HTTP) claimPartition(r *http.Request) (int32, bool) {
	b, err := io.ReadAll(io.LimitReader(r.Body, 4096))
	if err != nil {
		return 0, false
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	var c claimBody
	if json.Unmarshal(b, &c) != nil || c.Email == "" {
		return 0, false
	}
	return h.PartitionOf(h.EmailKey.EmailKey(c.Email)), true
}

// claim serves POST (claim) and DELETE (release) /internal/claims.
func (h HTTP) claim(w http.ResponseWriter, r *http.Request) {
	var c claimBody
	p := httpx.DecodeJSON(w, r, 4096, &c)
	if p == nil {
		p = validate.Struct(c)
	}
	if p != nil {
		httpx.WriteProblem(w, r, p)
		return
	}
	email := h.EmailKey.EmailKey(c.Email)
	var err error
	if r.Method == http.MethodDelete {
		err = h.Commands.ClaimEmail.Release(r.Context(), email, c.UID)
	} else {
		err = h.Commands.ClaimEmail.Handle(r.Context(), app.ClaimEmail{Email: email, UID: c.UID})
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// state serves GET /internal/profiles/{uid}.
func (h HTTP) state(w http.ResponseWriter, r *http.Request) {
	uid := mux.Vars(r)["uid"]
	if p := validate.Var("uid", uid, validate.UIDTag); p != nil {
		httpx.WriteProblem(w, r, p)
		return
	}
	st := h.Commands.State.Get(uid)
	httpx.WriteJSON(w, http.StatusOK, map[string]any{
		"uid": uid, "username": st.Username, "email": st.Email, "version": st.Version, "deleted": st.Deleted,
	})
}

// HeaderIdempotencyKey names a POST so that retrying it creates nothing new.
const HeaderIdempotencyKey = "Idempotency-Key"

// idempotencyNamespace is the UUID namespace of uids derived from
// Idempotency-Keys. Changing it would break retries across a deploy.
var idempotencyNamespace = uuid.MustParse("5b4f3f0e-6f0a-4e8e-9c1d-2f7a3c9e8d10")

// UIDForKey returns the uid of the profile a POST with this Idempotency-Key
// creates: a name-based (version 5) UUID, the same on every instance, so a
// retry reaches the same owner and finds the profile it created.
func UIDForKey(key string) string { return uuid.NewSHA1(idempotencyNamespace, []byte(key)).String() }

// validKey reports whether an Idempotency-Key is 1-255 visible ASCII characters.
func validKey(k string) bool {
	if len(k) == 0 || len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// newUIDPartition picks the uid of a new profile (newProfileUID), unless
// another instance picked it and forwarded the POST here, and places the
// POST on its owner.
func (h HTTP) newUIDPartition(r *http.Request) (int32, bool) {
	uid := r.Header.Get(HeaderUID)
	if r.Header.Get(routing.HeaderForwardedBy) == "" || validate.Var("uid", uid, validate.UIDTag) != nil {
		key := r.Header.Get(HeaderIdempotencyKey)
		if key != "" && !validKey(key) {
			return 0, false // the handler rejects it
		}
		var ok bool
		if uid, ok = h.newProfileUID(r, key); !ok {
			r.Header.Del(HeaderUID)
			return 0, false // the handler rejects it
		}
		r.Header.Set(HeaderUID, uid)
	}
	return h.PartitionOf(uid), true
}

// newProfileUID returns the uid of the profile a POST creates. A caller
// without profiles:admin may own one profile only, the one whose uid is
// its token's sub: that is the uid (ok is false when the sub is not a
// UUID, so it can own none), whatever Idempotency-Key it sends, and a
// second POST finds it taken (409 profile-exists). Any other caller (an
// admin, or anyone under AUTH_MODE=off) gets the uid derived from the
// Idempotency-Key, or a new one.
func (h HTTP) newProfileUID(r *http.Request, key string) (uid string, ok bool) {
	if p, found := auth.FromContext(r.Context()); found && !p.Admin() {
		return p.Subject, validate.Var("uid", p.Subject, validate.UIDTag) == nil
	}
	if key != "" {
		return UIDForKey(key), true
	}
	return h.NewUID(), true
}

// ownProfileOnly reports whether r's caller may own one profile only, the
// one whose uid is its sub: it is authenticated, and no admin.
func ownProfileOnly(r *http.Request) bool {
	p, found := auth.FromContext(r.Context())
	return found && !p.Admin()
}

// caller is the app's view of who sends r: the Principal the auth
// middleware put in its context (none: the zero Caller, who may do
// nothing).
func caller(r *http.Request) app.Caller {
	p, ok := auth.FromContext(r.Context())
	if !ok {
		return app.Caller{}
	}
	return app.Caller{Subject: p.Subject, Admin: p.Admin()}
}

func (h HTTP) uidPartition(r *http.Request) (int32, bool) {
	uid := mux.Vars(r)["uid"]
	if validate.Var("uid", uid, validate.UIDTag) != nil {
		return 0, false
	}
	return h.PartitionOf(uid), true
}

// profileBody is the body of PUT.
type profileBody struct {
	Username string `json:"username" validate:"required,username"`
	Email    string `json:"email" validate:"required,max=254,email"`
}

// createBody is the body of POST. displayName is optional (the username
// when absent or empty) and follows the username rule: at most 64
// printable characters, not only spaces. No event changes it later, so PUT
// does not take it.
type createBody struct {
	Username    string `json:"username" validate:"required,username"`
	DisplayName string `json:"displayName" validate:"omitempty,username"`
	Email       string `json:"email" validate:"required,max=254,email"`
}

// decodeBody reads and validates a JSON body into a T, or answers the
// problem and returns false.
func decodeBody[T any](h HTTP, w http.ResponseWriter, r *http.Request) (T, bool) {
	var b T
	p := httpx.DecodeJSON(w, r, h.MaxBody, &b)
	if p == nil {
		p = validate.Struct(b)
	}
	if p != nil {
		httpx.WriteProblem(w, r, p)
		return b, false
	}
	return b, true
}

func (h HTTP) uid(w http.ResponseWriter, r *http.Request) (string, bool) {
	uid := mux.Vars(r)["uid"]
	if p := validate.Var("uid", uid, validate.UIDTag); p != nil {
		httpx.WriteProblem(w, r, p)
		return "", false
	}
	return uid, true
}

// create serves POST /api/profile.
func (h HTTP) create(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get(HeaderIdempotencyKey)
	if key != "" && !validKey(key) {
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusBadRequest, "invalid-idempotency-key", "Invalid Idempotency-Key",
			"Idempotency-Key must be 1-255 visible ASCII characters"))
		return
	}
	b, ok := decodeBody[createBody](h, w, r)
	if !ok {
		return
	}
	uid := r.Header.Get(HeaderUID)
	if uid == "" { // not routed (a test wiring without routing), or a sub that is no uid
		if uid, ok = h.newProfileUID(r, key); !ok {
			auth.NotOwner(w, r, "without profiles:admin, a POST creates the profile whose uid is the token's sub, and this sub is not a UUID")
			return
		}
	}
	// The uid of a caller's own profile is its sub, not derived from the
	// key: a retry finds it taken (409 profile-exists), not a replay.
	idempotent := key != "" && !ownProfileOnly(r)
	res, err := h.Commands.CreateProfile.Handle(r.Context(), app.CreateProfile{
		UID: uid, Idempotent: idempotent, Username: b.Username, DisplayName: b.DisplayName, Email: b.Email, Async: async(r),
		Caller: caller(r),
	})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if res.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.Header().Set("Location", "/api/profile/"+res.Profile.UID)
	h.respond(w, r, res, http.StatusCreated)
}

// ifMatch parses If-Match (RFC 9110): "*", or a list of strong entity
// tags; the profiles' tags are their versions, e.g. "3". Weak or foreign
// tags never match.
func ifMatch(r *http.Request) app.IfMatch {
	values := r.Header.Values("If-Match")
	if len(values) == 0 {
		return app.IfMatch{}
	}
	m := app.IfMatch{Set: true}
	for _, v := range values {
		for _, tag := range strings.Split(v, ",") {
			tag = strings.TrimSpace(tag)
			if tag == "*" {
				m.Any = true
				continue
			}
			if len(tag) < 2 || tag[0] != '"' || tag[len(tag)-1] != '"' {
				continue
			}
			if n, err := strconv.ParseInt(tag[1:len(tag)-1], 10, 64); err == nil {
				m.Versions = append(m.Versions, n)
			}
		}
	}
	return m
}

// change serves PUT /api/profile/{uid}.
func (h HTTP) change(w http.ResponseWriter, r *http.Request) {
	uid, ok := h.uid(w, r)
	if !ok {
		return
	}
	b, ok := decodeBody[profileBody](h, w, r)
	if !ok {
		return
	}
	res, err := h.Commands.ChangeProfile.Handle(r.Context(), app.ChangeProfile{
		UID: uid, Username: b.Username, Email: b.Email, IfMatch: ifMatch(r), Async: async(r), Caller: caller(r),
	})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.respond(w, r, res, http.StatusOK)
}

// delete serves DELETE /api/profile/{uid}.
func (h HTTP) delete(w http.ResponseWriter, r *http.Request) {
	uid, ok := h.uid(w, r)
	if !ok {
		return
	}
	res, err := h.Commands.DeleteProfile.Handle(r.Context(), app.DeleteProfile{UID: uid, IfMatch: ifMatch(r), Async: async(r), Caller: caller(r)})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !res.Visible {
		h.accepted(w, r, res)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// respond answers a successful create or change: status with the profile
// when readers already see it, 202 Accepted otherwise.
func (h HTTP) respond(w http.ResponseWriter, r *http.Request, res app.Result, status int) {
	if !res.Visible {
		h.accepted(w, r, res)
		return
	}
	w.Header().Set("ETag", httpx.ETag(res.Profile.Version))
	httpx.WriteJSON(w, status, res.Profile)
}

// accepted answers 202: the events are in the log, but readers may not see
// them yet. The body says which version to wait for (GET ...?minVersion=).
func (h HTTP) accepted(w http.ResponseWriter, r *http.Request, res app.Result) {
	if async(r) {
		w.Header().Set("Preference-Applied", "respond-async")
	}
	w.Header().Set("Location", "/api/profile/"+res.Profile.UID)
	w.Header().Set("ETag", httpx.ETag(res.Profile.Version))
	httpx.WriteJSON(w, http.StatusAccepted, map[string]any{
		"uid": res.Profile.UID, "version": res.Profile.Version, "status": "accepted",
	})
}

func (h HTTP) fail(w http.ResponseWriter, r *http.Request, err error) {
	var pre *app.PreconditionError
	switch {
	case errors.Is(err, app.ErrNotOwner):
		auth.NotOwner(w, r, "without profiles:admin, a caller may create, change and delete only its own profile, whose uid is its token's sub")
	case errors.Is(err, app.ErrNotFound):
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusNotFound, "profile-not-found", "Profile not found", err.Error()))
	case errors.As(err, &pre):
		w.Header().Set("ETag", httpx.ETag(pre.Current))
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusPreconditionFailed, "precondition-failed", "Precondition failed",
			fmt.Sprintf("If-Match does not match the current version %d", pre.Current)))
	case errors.Is(err, app.ErrEmailTaken):
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusConflict, "email-taken", "Email taken",
			"another profile holds this email address"))
	case errors.Is(err, app.ErrIdempotencyMismatch):
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusUnprocessableEntity, "idempotency-key-reused", "Idempotency-Key reused",
			"this Idempotency-Key was first used with a different username, displayName or email"))
	case errors.Is(err, app.ErrIdempotencyGone):
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusConflict, "idempotency-key-deleted", "Profile deleted",
			err.Error()))
	case errors.Is(err, events.ErrAlreadyExists):
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusConflict, "profile-exists", "Profile exists", err.Error()))
	case errors.Is(err, app.ErrAppend):
		h.Log.Warn("command not accepted", "path", r.URL.Path, "err", err)
		w.Header().Set("Retry-After", "1")
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusServiceUnavailable, "unavailable", "", err.Error()))
	default:
		h.Log.Error("command failed", "path", r.URL.Path, "err", err)
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusInternalServerError, "", "", "the command failed; see the service log"))
	}
}

// async reports whether the client sent Prefer: respond-async (RFC 7240).
func async(r *http.Request) bool {
	for _, v := range r.Header.Values("Prefer") {
		for _, pref := range strings.Split(v, ",") {
			name, _, _ := strings.Cut(strings.TrimSpace(pref), "=")
			if strings.EqualFold(strings.TrimSpace(name), "respond-async") {
				return true
			}
		}
	}
	return false
}
