package httpx

import (
	"net/http"
	"sort"
	"strings"
	"sync"
)

// Health serves /healthz (the process is up) and /readyz (it can serve:
// every registered check passes). The zero value is ready, with no checks.
// It is safe for concurrent use.
type Health struct {
	mu     sync.Mutex
	checks map[string]func() error
}

// Check registers a named readiness check. A nil error means ready.
func (h *Health) Check(name string, check func() error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.checks == nil {
		h.checks = map[string]func() error{}
	}
	h.checks[name] = check
}

// Ready runs every check and returns the failures by name.
func (h *Health) Ready() map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	failed := map[string]string{}
	for name, check := range h.checks {
		if err := check(); err != nil {
			failed[name] = err.Error()
		}
	}
	return failed
}

// Healthz serves liveness: 200 whenever the process can answer at all.
func (h *Health) Healthz(w http.ResponseWriter, r *http.Request) {
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// Readyz serves readiness: 200 when every check passes, else a 503 problem
// naming the failing checks.
func (h *Health) Readyz(w http.ResponseWriter, r *http.Request) {
	failed := h.Ready()
	if len(failed) == 0 {
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
		return
	}
	reasons := make([]string, 0, len(failed))
	for name, why := range failed {
		reasons = append(reasons, name+": "+why)
	}
	sort.Strings(reasons)
	WriteProblem(w, r, NewProblem(http.StatusServiceUnavailable, "not-ready", "Not ready", strings.Join(reasons, "; ")))
}
