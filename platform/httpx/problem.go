// Package httpx is the HTTP plumbing shared by every profiles binary: RFC
// 9457 problem details, strict JSON request decoding with size limits,
// request logging and metrics, health and readiness, and a server that
// shuts down gracefully.
package httpx

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// ProblemContentType is the media type of every error body.
const ProblemContentType = "application/problem+json"

// Problem is an RFC 9457 problem details object. Type is a URI reference
// naming the kind of problem; "about:blank" means the status says it all.
type Problem struct {
	Type     string       `json:"type"`
	Title    string       `json:"title"`
	Status   int          `json:"status"`
	Detail   string       `json:"detail,omitempty"`
	Instance string       `json:"instance,omitempty"`
	Errors   []FieldError `json:"errors,omitempty"`
}

// FieldError describes one invalid field of a request body or parameter.
type FieldError struct {
	Field   string `json:"field"`
	Rule    string `json:"rule"`
	Message string `json:"message"`
}

// Error makes a *Problem usable as an error.
func (p *Problem) Error() string { return p.Title + ": " + p.Detail }

// NewProblem returns a problem of the given status. typ is a short slug
// such as "validation-failed"; it becomes the URI "urn:profiles:problem:<slug>".
// An empty typ gives "about:blank" with the status text as title.
func NewProblem(status int, typ, title, detail string) *Problem {
	p := &Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail}
	if typ != "" {
		p.Type = "urn:profiles:problem:" + typ
	}
	if title != "" {
		p.Title = title
	}
	return p
}

// WriteProblem writes p as the response, with its status and media type.
// Instance defaults to the request path.
func WriteProblem(w http.ResponseWriter, r *http.Request, p *Problem) {
	if p.Instance == "" && r != nil {
		p.Instance = r.URL.Path
	}
	w.Header().Set("Content-Type", ProblemContentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// NotFoundHandler and MethodNotAllowedHandler answer with problem details,
// for use as a router's fallbacks.
var (
	NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteProblem(w, r, NewProblem(http.StatusNotFound, "", "", "no such resource"))
	})
	MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteProblem(w, r, NewProblem(http.StatusMethodNotAllowed, "", "", r.Method+" is not allowed here"))
	})
)

// ETag returns the strong entity tag of a profile at version.
func ETag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }
