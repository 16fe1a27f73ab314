// Package peer is the internal API of the service's instances, on both
// sides: its paths, its request and response bodies, the Client that calls
// another instance (or this one's routed endpoint), and the handlers that
// answer. command-svc uses it for email claims and profile state (caller
// and owner) and for the path of query-svc's visibility wait, query-svc
// for that wait's route and the view-rebuild endpoints, and the replay
// CLI as their client.
//
// The handlers map HTTP only: what a call does is behind the small
// interfaces they take, and an error of those is written by the caller's
// fail function, so that each service keeps its own problem responses.
package peer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"profiles/events"
	"profiles/platform/httpx"
	"profiles/platform/tracing"
	"profiles/platform/validate"
)

// Paths of the internal API.
const (
	// PathClaims takes POST (claim) and DELETE (release) with a
	// ClaimRequest; it runs on the owner of the email's partition.
	PathClaims = "/internal/claims"
	// RouteProfile is the route (a gorilla/mux template) of GET of a
	// ProfileState; it runs on the owner of the uid's partition.
	RouteProfile = "/internal/profiles/{uid}"
	// RouteVisible is the route of query-svc's GET that waits until a
	// write is visible to every read of it (see VisiblePath); it runs on
	// the owner of the uid's partition, which must hold every email's
	// index entry too. It answers 204 once the write is visible, and 400
	// for an email whose index entry is in another partition.
	RouteVisible = "/internal/visible/{uid}"
	// PathViewRebuild takes POST (start a rebuild of the instance's view)
	// and GET (its ViewStatus). Each instance answers for itself.
	PathViewRebuild = "/admin/view/rebuild"

	pathProfiles = "/internal/profiles/"
	pathVisible  = "/internal/visible/"
	// maxClaimBody bounds a ClaimRequest.
	maxClaimBody = 4096
)

// ClaimRequest is the body of POST and DELETE PathClaims: claim email for
// uid, or drop uid's claim on it. Email is the normalized email; the owner
// derives the claim's key from it.
type ClaimRequest struct {
	Email string `json:"email" validate:"required,max=254"`
	UID   string `json:"uid" validate:"required,uuid"`
}

// ProfileState is the body of GET RouteProfile: the owner's current state
// of a profile (version 0 for one that never existed).
type ProfileState struct {
	Deleted  bool   `json:"deleted"`
	Email    string `json:"email"`
	UID      string `json:"uid"`
	Username string `json:"username"`
	Version  int64  `json:"version"`
}

// ViewStatus is the body of POST and GET PathViewRebuild: what an
// instance reports about the latest rebuild of its view.
type ViewStatus struct {
	// Instance is the id of the instance that answers.
	Instance string `json:"instance"`
	// State is "idle" (no rebuild since start), "rebuilding" or "done".
	State string `json:"state"`
	// Generation is the snapshot generation the rebuild reads.
	Generation int        `json:"generation"`
	StartedAt  *time.Time `json:"startedAt,omitempty"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	// Partitions the instance owns, and how many of them are still
	// catching up.
	Partitions int `json:"partitions"`
	Behind     int `json:"behind"`
	// Records read from Kafka since the rebuild started.
	Records int64 `json:"records"`
}

// VisiblePath is the path and query of a GET of RouteVisible: wait until
// uid is at version or later by uid, and under each of emails in search.
func VisiblePath(uid string, version int64, emails []string) string {
	q := url.Values{"minVersion": {strconv.FormatInt(version, 10)}}
	if len(emails) > 0 {
		q["email"] = emails
	}
	return pathVisible + url.PathEscape(uid) + "?" + q.Encode()
}

// ErrClaimTaken is returned by Client.Claim when the owner refuses the
// claim (409): another live profile holds the email, or claims it now.
var ErrClaimTaken = errors.New("email claim refused: taken")

// StatusError is returned by a Client call that got an unexpected answer.
// Error is the status line.
type StatusError struct {
	Status string // e.g. "503 Service Unavailable"
	Code   int
	// Body is the start of the answer's body.
	Body []byte
}

func (e *StatusError) Error() string { return e.Status }

// Client calls another instance's internal API, at a base URL such as
// http://10.0.0.5:8081. The zero value uses http.DefaultClient and signs
// nothing. It is safe for concurrent use.
type Client struct {
	HTTP *http.Client
	// Sign, if set, signs or authorizes each request before it is sent
	// (auth.Signer for the internal endpoints, a bearer token for the
	// admin ones).
	Sign func(r *http.Request, body []byte)
}

// do sends a request for route (its template: the name of its client
// span, when the client's transport is traced) to u.
func (c Client) do(ctx context.Context, method, route, u string, body []byte) (*http.Response, error) {
	ctx = tracing.WithRoute(ctx, route)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Sign != nil {
		c.Sign(req, body)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	return hc.Do(req)
}

func statusError(resp *http.Response) *StatusError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return &StatusError{Status: resp.Status, Code: resp.StatusCode, Body: body}
}

// Claim asks base to claim req.Email for req.UID: nil on 204,
// ErrClaimTaken on 409, a *StatusError on another status, or the
// transport's error.
func (c Client) Claim(ctx context.Context, base string, req ClaimRequest) error {
	return c.claim(ctx, http.MethodPost, base, req)
}

// Release asks base to drop req.UID's claim on req.Email; its errors are
// Claim's.
func (c Client) Release(ctx context.Context, base string, req ClaimRequest) error {
	return c.claim(ctx, http.MethodDelete, base, req)
}

func (c Client) claim(ctx context.Context, method, base string, req ClaimRequest) error {
	b, _ := json.Marshal(req)
	resp, err := c.do(ctx, method, PathClaims, strings.TrimRight(base, "/")+PathClaims, b)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNoContent:
		return nil
	case http.StatusConflict:
		return ErrClaimTaken
	default:
		return statusError(resp)
	}
}

// Profile returns the current state of uid from base.
func (c Client) Profile(ctx context.Context, base, uid string) (events.Profile, error) {
	resp, err := c.do(ctx, http.MethodGet, pathProfiles+"{uid}", strings.TrimRight(base, "/")+pathProfiles+url.PathEscape(uid), nil)
	if err != nil {
		return events.Profile{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return events.Profile{}, fmt.Errorf("state of %s: %w", uid, statusError(resp))
	}
	var st ProfileState
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return events.Profile{}, err
	}
	return events.Profile{UID: st.UID, Username: st.Username, Email: st.Email, Version: st.Version, Deleted: st.Deleted}, nil
}

// StartRebuild asks the instance at base to rebuild its view: nil on 202,
// a *StatusError on another status, or the transport's error.
func (c Client) StartRebuild(ctx context.Context, base string) error {
	resp, err := c.do(ctx, http.MethodPost, PathViewRebuild, strings.TrimRight(base, "/")+PathViewRebuild, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return statusError(resp)
	}
	return nil
}

// ViewStatus returns the status of the latest view rebuild of the
// instance at base.
func (c Client) ViewStatus(ctx context.Context, base string) (ViewStatus, error) {
	var st ViewStatus
	endpoint := strings.TrimRight(base, "/") + PathViewRebuild
	resp, err := c.do(ctx, http.MethodGet, PathViewRebuild, endpoint, nil)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s: %w", endpoint, statusError(resp))
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// Claimer is the owner's side of PathClaims. email is the request's
// (normalized) email; the Claimer derives the claim's key.
type Claimer interface {
	Claim(ctx context.Context, email, uid string) error
	Release(ctx context.Context, email, uid string) error
}

// Fail writes the answer to a request whose call failed with err.
type Fail func(w http.ResponseWriter, r *http.Request, err error)

// PeekClaim returns the ClaimRequest of r, leaving r's body readable
// again, for a router that places the request by its email. It reports
// false for a body that is no ClaimRequest with an email; the handler
// then rejects it.
func PeekClaim(r *http.Request) (ClaimRequest, bool) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxClaimBody))
	if err != nil {
		return ClaimRequest{}, false
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	var c ClaimRequest
	if json.Unmarshal(b, &c) != nil || c.Email == "" {
		return ClaimRequest{}, false
	}
	return c, true
}

// ClaimsHandler serves POST (claim) and DELETE (release) PathClaims with
// c: 204 when it succeeds, a problem for an invalid ClaimRequest, and
// what fail writes for c's error.
func ClaimsHandler(c Claimer, fail Fail) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req ClaimRequest
		p := httpx.DecodeJSON(w, r, maxClaimBody, &req)
		if p == nil {
			p = validate.Struct(req)
		}
		if p != nil {
			httpx.WriteProblem(w, r, p)
			return
		}
		var err error
		if r.Method == http.MethodDelete {
			err = c.Release(r.Context(), req.Email, req.UID)
		} else {
			err = c.Claim(r.Context(), req.Email, req.UID)
		}
		if err != nil {
			fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// States is the owner's side of RouteProfile.
type States interface {
	// Get returns the current state of uid (the zero Profile if it never
	// existed), or the error of reading it.
	Get(uid string) (events.Profile, error)
}

// ProfileUID returns the uid of a request of RouteProfile.
func ProfileUID(r *http.Request) string { return mux.Vars(r)["uid"] }

// ProfileHandler serves GET RouteProfile with s: 200 with the
// ProfileState, 400 for a uid that is no UUID, or 500 when s fails (the
// error goes to log).
func ProfileHandler(s States, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		uid := ProfileUID(r)
		if p := validate.Var("uid", uid, validate.UIDTag); p != nil {
			httpx.WriteProblem(w, r, p)
			return
		}
		st, err := s.Get(uid)
		if err != nil {
			log.ErrorContext(r.Context(), "reading the state of a profile failed", "uid", uid, "err", err)
			httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusInternalServerError, "", "", "reading the state failed; see the service log"))
			return
		}
		httpx.WriteJSON(w, http.StatusOK, ProfileState{UID: uid, Username: st.Username, Email: st.Email, Version: st.Version, Deleted: st.Deleted})
	})
}

// Rebuilder is the instance's side of PathViewRebuild. Its ViewStatus
// need not name the instance: the handlers do.
type Rebuilder interface {
	Rebuild() error
	RebuildStatus() ViewStatus
}

// StartRebuildHandler serves POST PathViewRebuild: it starts v's rebuild
// and answers 202 with the status, or what fail writes for Rebuild's error.
func StartRebuildHandler(v Rebuilder, instance string, fail Fail) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := v.Rebuild(); err != nil {
			fail(w, r, err)
			return
		}
		httpx.WriteJSON(w, http.StatusAccepted, status(v, instance))
	})
}

// RebuildStatusHandler serves GET PathViewRebuild: 200 with v's status.
func RebuildStatusHandler(v Rebuilder, instance string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, status(v, instance))
	})
}

func status(v Rebuilder, instance string) ViewStatus {
	st := v.RebuildStatus()
	st.Instance = instance
	return st
}
