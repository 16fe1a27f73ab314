package httpx

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Serve runs srv on ln until ctx ends, then shuts it down gracefully: it
// stops accepting, lets requests in flight finish for up to grace, and then
// closes what is left. It returns nil after a clean shutdown.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, grace time.Duration) error {
	busy := trackBusy(srv)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	slog.Info("http listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		slog.Warn("http server: requests still running after the shutdown grace are cut off", "grace", grace, "requests", busy())
		err = srv.Close()
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// Timeouts are the time limits of a server (see http.Server for what each
// bounds). DefaultTimeouts are the ones NewServer uses; NewServerWith takes
// others, for example much shorter ones in a test of the limits.
type Timeouts struct {
	// ReadHeader bounds reading a request's headers (slowloris).
	ReadHeader time.Duration
	// Read bounds reading a whole request, body included.
	Read time.Duration
	// Write bounds the time from the end of the headers to the end of the
	// response, so it must cover a handler's waits.
	Write time.Duration
	// Idle bounds the wait for the next request on a keep-alive connection.
	Idle time.Duration
}

// DefaultTimeouts returns the timeouts of NewServer: suited to a JSON API
// whose handlers may wait a bounded time for a view to catch up.
func DefaultTimeouts() Timeouts {
	return Timeouts{
		ReadHeader: 5 * time.Second,
		Read:       15 * time.Second,
		Write:      60 * time.Second,
		Idle:       120 * time.Second,
	}
}

// MaxHeaderBytes limits the request line and headers of a request to a
// server of NewServer or NewServerWith (net/http allows 4 KiB of slack on
// top); larger ones get 431.
const MaxHeaderBytes = 64 << 10

// NewServer returns an http.Server for h with DefaultTimeouts and
// MaxHeaderBytes.
func NewServer(h http.Handler) *http.Server {
	return NewServerWith(h, DefaultTimeouts())
}

// NewServerWith returns the server of NewServer with other timeouts.
func NewServerWith(h http.Handler, t Timeouts) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
}

// trackBusy chains a ConnState hook to srv that follows which connections
// have a request in progress, and returns how many do now.
func trackBusy(srv *http.Server) func() int {
	var (
		mu   sync.Mutex
		busy = map[net.Conn]bool{}
	)
	prev := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		if prev != nil {
			prev(c, st)
		}
		mu.Lock()
		if st == http.StateActive {
			busy[c] = true
		} else {
			delete(busy, c)
		}
		mu.Unlock()
	}
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(busy)
	}
}
