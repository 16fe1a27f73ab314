package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"profiles/platform/httpx"
	"profiles/platform/observe"
	"profiles/platform/service"
)

// CeilingRoleEnv, when set in a process's environment, makes
// MaybeServeCeiling turn that process into the HTTP ceiling server, listening
// on the address in HTTP_ADDR. The bench starts the ceiling by running its
// own executable (the bench binary, or the test binary) with it.
const CeilingRoleEnv = "PROFILES_BENCH_ROLE"

// ceilingProfile is the fixed answer of the HTTP ceiling: a profile the size
// and shape of the ones the bench seeds.
var ceilingProfile = []byte(`{"uid":"00000000-0000-4000-8000-000000000042","username":"user42","displayName":"user42","email":"user42@bench.example","version":1,"createdAt":"2026-01-01T00:00:00Z","updatedAt":"2026-01-01T00:00:00Z"}`)

// CeilingHandler is the HTTP ceiling: the router stack of the services
// (platform/service.NewRouter: gorilla/mux with the logging and metrics
// middleware, problem+json fallbacks, /healthz, /readyz, /metrics) with the
// API's routes, each answered at once with a fixed profile. It reads and
// drops the body of a write, and answers with the status the service would:
// 200, 201 for a POST, 202 with Prefer: respond-async.
func CeilingHandler() http.Handler {
	log := observe.SetupLogger("bench-ceiling", "json", "info")
	var health httpx.Health
	off, _ := httpx.ParseAccessLog("off") // the ceiling logs nothing per request
	r := service.NewRouter(log, &health, service.WithAccessLog(off))
	one := func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		status := http.StatusOK
		if req.Method == http.MethodPost {
			status = http.StatusCreated
		}
		if req.Method != http.MethodGet && req.Header.Get("Prefer") == "respond-async" {
			status = http.StatusAccepted
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("ETag", `"1"`)
		w.WriteHeader(status)
		_, _ = w.Write(ceilingProfile)
	}
	search := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(append(append([]byte("["), ceilingProfile...), ']'))
	}
	r.HandleFunc("/api/profile", one).Methods(http.MethodPost)
	r.HandleFunc("/api/profile/{uid}", one).Methods(http.MethodGet, http.MethodPut)
	r.HandleFunc("/api/search", search).Methods(http.MethodGet)
	return r
}

// MaybeServeCeiling serves the HTTP ceiling and exits when CeilingRoleEnv
// is "ceiling"; otherwise it returns at once. Call it first in main (and
// TestMain).
func MaybeServeCeiling() {
	if os.Getenv(CeilingRoleEnv) != "ceiling" {
		return
	}
	addr := os.Getenv("HTTP_ADDR")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := observe.SetupLogger("bench-ceiling", "json", "info")
	if err := service.Run(ctx, log, addr, CeilingHandler(), 2*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "bench-ceiling:", err)
		os.Exit(1)
	}
	os.Exit(0)
}
