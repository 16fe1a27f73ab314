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

	"github.com/gorilla/mux"

	"profiles/command-svc/internal/app"
	"profiles/command-svc/internal/state"
	"profiles/events"
	"profiles/platform/auth"
	"profiles/platform/httpx"
	"profiles/platform/peer"
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
	State         peer.States
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
	// NewUID returns a fresh uid for a profile created with email ("" when
	// the body holds none that can be read); app.ColocatedUID places it
	// with the email's claim.
	NewUID func(email string) string
	// MaxBody limits a request body in bytes; 0 means httpx.DefaultMaxBody.
	MaxBody int64
	Log     *slog.Logger
	// EmailKey turns an email into the key of its claim (pii.Codec: an
	// HMAC of the normalized email).
	EmailKey events.EmailKeyer
}

// Register adds the API routes to r.
func (h HTTP) Register(r *mux.Router) {
	r.Handle("/api/profile", withCaller(h.chooseUID(h.Routing.Handler(newUIDPartition(h.PartitionOf), http.HandlerFunc(h.create))))).Methods(http.MethodPost)
	r.Handle("/api/profile/{uid}", withCaller(h.Routing.Handler(h.uidPartition, http.HandlerFunc(h.change)))).Methods(http.MethodPut)
	r.Handle("/api/profile/{uid}", withCaller(h.Routing.Handler(h.uidPartition, http.HandlerFunc(h.delete)))).Methods(http.MethodDelete)
	// Between instances (platform/peer): email claims run on the owner of
	// the email's partition, and a profile's current state comes from its
	// owner.
	r.Handle(peer.PathClaims, h.Routing.Handler(h.claimPartition, peer.ClaimsHandler(claims{h}, h.fail))).Methods(http.MethodPost, http.MethodDelete)
	r.Handle(peer.RouteProfile, h.Routing.Handler(h.uidPartition, peer.ProfileHandler(h.Commands.State, h.Log))).Methods(http.MethodGet)
}

// claims is the owner's side of peer.PathClaims: the use case, with the
// claim's key of the request's email.
type claims struct{ h HTTP }

func (c claims) Claim(ctx context.Context, email, uid string) error {
	return c.h.Commands.ClaimEmail.Handle(ctx, app.ClaimEmail{Email: c.h.EmailKey.EmailKey(email), UID: uid})
}

func (c claims) Release(ctx context.Context, email, uid string) error {
	return c.h.Commands.ClaimEmail.Release(ctx, c.h.EmailKey.EmailKey(email), uid)
}

// claimPartition places a claim on the owner of its email's partition.
func (h HTTP) claimPartition(r *http.Request) (int32, bool) {
	c, ok := peer.PeekClaim(r)
	if !ok {
		return 0, false
	}
	return h.PartitionOf(h.EmailKey.EmailKey(c.Email)), true
}

// HeaderIdempotencyKey names a POST so that retrying it creates nothing new.
const HeaderIdempotencyKey = "Idempotency-Key"

// chooseUID sets HeaderUID of a POST to the uid of the profile it creates,
// as app.NewProfileUID chooses it for the caller and its Idempotency-Key,
// so that the routing of the POST, its owner, and create read it there. A
// POST that another instance forwarded here with a uid keeps that uid.
// When the app chooses none (an invalid key, a caller that may own no
// profile), the header is removed and create answers the refusal.
func (h HTTP) chooseUID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(routing.HeaderForwardedBy) == "" || validate.Var("uid", r.Header.Get(HeaderUID), validate.UIDTag) != nil {
			uid, _, err := app.NewProfileUID(callerOf(r), r.Header.Get(HeaderIdempotencyKey), func() string { return h.NewUID(h.peekEmail(r)) })
			if err != nil {
				r.Header.Del(HeaderUID)
			} else {
				r.Header.Set(HeaderUID, uid)
			}
		}
		next.ServeHTTP(w, r)
	})
}

// peekEmail returns the email of a POST's body, or "" when the body holds
// none that can be read. It leaves the body as it was for the handler,
// which decodes and checks it (and refuses one above MaxBody).
func (h HTTP) peekEmail(r *http.Request) string {
	limit := h.MaxBody
	if limit <= 0 {
		limit = httpx.DefaultMaxBody
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	r.Body = readCloser{io.MultiReader(bytes.NewReader(b), r.Body), r.Body}
	var body struct {
		Email string `json:"email"`
	}
	if err != nil || int64(len(b)) > limit || json.Unmarshal(b, &body) != nil {
		return ""
	}
	return body.Email
}

// readCloser reads from Reader and closes Closer.
type readCloser struct {
	io.Reader
	io.Closer
}

// newUIDPartition places a POST on the owner of the uid in its HeaderUID
// (see chooseUID); a POST without one goes to create, which refuses it.
func newUIDPartition(partitionOf func(uid string) int32) func(*http.Request) (int32, bool) {
	return func(r *http.Request) (int32, bool) {
		uid := r.Header.Get(HeaderUID)
		if uid == "" {
			return 0, false
		}
		return partitionOf(uid), true
	}
}

type callerKey struct{}

// withCaller resolves who sends a request, once: the app.Caller of the
// Principal that the auth middleware put in its context (none: the zero
// Caller), which the handlers read with callerOf.
func withCaller(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var c app.Caller
		if p, ok := auth.FromContext(r.Context()); ok {
			c = app.Caller{Subject: p.Subject, Admin: p.Admin()}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	})
}

// callerOf returns the caller withCaller resolved for r (the zero Caller
// if it did not run).
func callerOf(r *http.Request) app.Caller {
	c, _ := r.Context().Value(callerKey{}).(app.Caller)
	return c
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
	if app.CheckIdempotencyKey(key) != nil {
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusBadRequest, "invalid-idempotency-key", "Invalid Idempotency-Key",
			"Idempotency-Key must be 1-255 visible ASCII characters"))
		return
	}
	b, ok := decodeBody[createBody](h, w, r)
	if !ok {
		return
	}
	c := callerOf(r)
	uid := r.Header.Get(HeaderUID)
	if uid == "" { // not routed (a wiring without chooseUID), or a caller that may own no profile
		var err error
		if uid, _, err = app.NewProfileUID(c, key, func() string { return h.NewUID(b.Email) }); err != nil {
			auth.NotOwner(w, r, "without profiles:admin, a POST creates the profile whose uid is the token's sub, and this sub is not a UUID")
			return
		}
	}
	res, err := h.Commands.CreateProfile.Handle(r.Context(), app.CreateProfile{
		UID: uid, Idempotent: c.Idempotent(key), Username: b.Username, DisplayName: b.DisplayName, Email: b.Email, Async: async(r),
		Caller: c, RequestID: requestID(r),
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
		UID: uid, Username: b.Username, Email: b.Email, IfMatch: ifMatch(r), Async: async(r), Caller: callerOf(r),
		RequestID: requestID(r),
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
	res, err := h.Commands.DeleteProfile.Handle(r.Context(), app.DeleteProfile{UID: uid, IfMatch: ifMatch(r), Async: async(r), Caller: callerOf(r), RequestID: requestID(r)})
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

// RetryAfterOverloaded is the Retry-After, in seconds, of a write refused
// because its instance has too many in flight (app.ErrOverloaded). The
// writes in flight take milliseconds each, so a place is free again well
// within it; clients should add jitter to spread their retries.
const RetryAfterOverloaded = "1"

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
	case errors.Is(err, app.ErrOverloaded):
		// Not logged: a burst would log a line per refusal; the metrics
		// count them (profiles_command_write_admissions_total).
		w.Header().Set("Retry-After", RetryAfterOverloaded)
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusServiceUnavailable, "overloaded", "Overloaded",
			"this instance has as many writes in flight as it takes; nothing was written, try again after Retry-After"))
	case errors.Is(err, app.ErrAppend), errors.Is(err, app.ErrNotServing), errors.Is(err, app.ErrNotVisible):
		if errors.Is(err, app.ErrNotWriter) || errors.Is(err, app.ErrNotServing) {
			// Nothing was written: the routing layer sends the command
			// to the partition's new owner (or answers this 503 if its
			// wait is over).
			w.Header().Set(routing.HeaderNotWritten, "1")
		} else {
			h.Log.WarnContext(r.Context(), "command not accepted", "route", httpx.Route(r), "err", err)
		}
		w.Header().Set("Retry-After", "1")
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusServiceUnavailable, "unavailable", "", err.Error()))
	default:
		h.Log.ErrorContext(r.Context(), "command failed", "route", httpx.Route(r), "err", err)
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusInternalServerError, "", "", "the command failed; see the service log"))
	}
}

// requestID returns the request id the routing layer gave a forwarded
// write (routing.HeaderRequestID), or "" when it has none that is a
// UUIDv7 (state.RequestID): such a request is never recognized as sent
// again.
func requestID(r *http.Request) string {
	id := strings.ToLower(r.Header.Get(routing.HeaderRequestID))
	if !state.RequestID(id) || validate.Var("uid", id, validate.UIDTag) != nil {
		return ""
	}
	return id
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
