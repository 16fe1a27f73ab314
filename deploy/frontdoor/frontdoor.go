// Package frontdoor is the single entry point of the API on :8080. It only
// routes: reads (GET, HEAD) go to query-svc and writes to command-svc, so a
// client sees one REST API while each side scales on its own.
//
// Each side may run as several instances. Every instance accepts any request
// and forwards it internally to the instance that owns the key, so the front
// door only spreads requests round-robin over the instances of the right
// service. When an instance cannot be connected to (the request never left
// the front door), the next instance of the same service is tried, whatever
// the method. Once a write has been sent, its outcome is final: a response
// is passed on as is, and a failure mid-request is a 502, never a retry. A
// read that fails mid-request (its instance died) is tried on the next
// instance.
//
// The front door does not authenticate: it passes the caller's
// Authorization header on, and every command-svc and query-svc instance
// verifies it (their own ports are reachable too, so they must). It strips
// every X-Profiles-* header from client requests: those are for the
// instances, which sign them (see platform/auth).
//
// The change stream (GET /api/changes, Server-Sent Events) goes to
// query-svc like any read, and is passed on as it comes, for as long as it
// lasts (see serveStream).
package frontdoor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"profiles/platform/config"
	"profiles/platform/httpx"
)

// MaxBody is the largest request body the front door accepts. It holds the
// whole body in memory so that it can send it again to another instance;
// the services themselves accept far less (httpx.DefaultMaxBody), so this
// only keeps a client from making the front door buffer without end.
const MaxBody = 1 << 20

// dialTimeout bounds how long connecting to one instance may take before
// the next one is tried. Instances are on the same network, so a connection
// that takes longer than this belongs to an instance that is down.
const dialTimeout = 3 * time.Second

// ParseURLs parses a comma-separated list of upstream base URLs, such as the
// value of COMMAND_URL. Each must be an absolute http or https URL; the list
// must not be empty.
func ParseURLs(s string) ([]*url.URL, error) {
	items := config.List(s)
	if len(items) == 0 {
		return nil, errors.New("no URL given")
	}
	out := make([]*url.URL, 0, len(items))
	for _, item := range items {
		u, err := url.Parse(item)
		if err != nil {
			return nil, err
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%q is not an http(s) base URL such as http://127.0.0.1:8081", item)
		}
		out = append(out, u)
	}
	return out, nil
}

// Option changes the front door's behaviour.
type Option func(*options)

type options struct {
	stop <-chan struct{}
}

// StopStreams ends every change stream passing through the front door when
// stop is closed. Give it the shutdown signal, so that the server's
// graceful shutdown does not wait for streams, which never end by
// themselves.
func StopStreams(stop <-chan struct{}) Option { return func(o *options) { o.stop = stop } }

// StreamPath is the path of the change stream (Server-Sent Events), which
// query-svc serves and which may stay open for hours.
const StreamPath = "/api/changes"

// New returns the front door handler for the instances of command-svc and
// of query-svc, given by their base URLs. Both lists must be non-empty.
func New(commandURLs, queryURLs []*url.URL, log *slog.Logger, opts ...Option) (http.Handler, error) {
	if len(commandURLs) == 0 || len(queryURLs) == 0 {
		return nil, errors.New("frontdoor: every service needs at least one instance URL")
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	transport := newTransport()
	write := newPool("command-svc", commandURLs, transport, log)
	read := newPool("query-svc", queryURLs, transport, log)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := readBody(w, r)
		if !ok {
			return
		}
		switch {
		case r.Method == http.MethodGet && r.URL.Path == StreamPath:
			serveStream(w, r, read, o.stop)
		case r.Method == http.MethodGet || r.Method == http.MethodHead:
			read.serve(w, r, body)
		default:
			write.serve(w, r, body)
		}
	}), nil
}

// serveStream passes a change stream from query-svc to the client as it
// comes. httputil.ReverseProxy already flushes a text/event-stream
// response after every write (as with FlushInterval -1), and the
// transport has no response timeout; what would cut a stream is the
// front door's own server, whose WriteTimeout bounds every response. So
// the stream's write deadline is lifted; the client's going away, the
// upstream's end, or stop ends it.
func serveStream(w http.ResponseWriter, r *http.Request, read *pool, stop <-chan struct{}) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if stop != nil {
		go func() {
			select {
			case <-stop:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	defer func() {
		// ReverseProxy aborts the handler (http.ErrAbortHandler) when
		// copying the body fails: here the normal end of a stream whose
		// client went away, or that stop or a failed upstream broke off.
		// The client sees the stream end, and reconnects with its
		// Last-Event-ID.
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			panic(v)
		}
	}()
	read.serve(w, r.WithContext(ctx), nil)
}

// newTransport is http.DefaultTransport with a short connect timeout (to
// fail over quickly) and more idle connections per instance (the front door
// talks to few hosts, a lot).
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.MaxIdleConnsPerHost = 64
	return t
}

// readBody reads the whole request body, up to MaxBody, so that it can be
// sent again. It answers 413 (or 400 if the body cannot be read) itself and
// then returns false.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, true
	}
	tooLarge := func() {
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusRequestEntityTooLarge, "body-too-large", "",
			fmt.Sprintf("the body must be at most %d bytes", MaxBody)))
	}
	if r.ContentLength > MaxBody {
		tooLarge()
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			tooLarge()
		} else if r.Context().Err() == nil {
			httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusBadRequest, "", "", "the request body could not be read"))
		}
		return nil, false
	}
	return body, true
}

// pool is the set of instances of one service.
type pool struct {
	name      string
	upstreams []*upstream
	next      atomic.Uint64
	log       *slog.Logger
	now       func() time.Time // time.Now; tests change it
}

type upstream struct {
	url   *url.URL
	proxy *httputil.ReverseProxy
	// downUntil is when (in Unix nanoseconds) an instance that could not be
	// connected to is tried in turn again; until then it is tried only when
	// every other instance has failed too. Zero: it was reachable last time.
	downUntil atomic.Int64
}

// downFor is how long an instance that could not be connected to is tried
// last. It spares requests a connection attempt to an instance that is
// down (which can take up to dialTimeout), and the log a line per request.
const downFor = 2 * time.Second

// attempt is how an upstream's ErrorHandler tells pool.serve that the
// request was not sent, so another instance may be tried. It travels in the
// request's context.
type attempt struct{ notSent error }

type attemptKey struct{}

func newPool(name string, urls []*url.URL, transport http.RoundTripper, log *slog.Logger) *pool {
	p := &pool{name: name, log: log, now: time.Now}
	for _, target := range urls {
		p.upstreams = append(p.upstreams, &upstream{url: target, proxy: &httputil.ReverseProxy{
			Transport: transport,
			ErrorLog:  slog.NewLogLogger(log.Handler(), slog.LevelWarn),
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(target)
				pr.SetXForwarded()
				// Headers the services use among themselves never come from
				// a client.
				for name := range pr.Out.Header {
					if strings.HasPrefix(http.CanonicalHeaderKey(name), "X-Profiles-") {
						pr.Out.Header.Del(name)
					}
				}
				// The body is already read (and a 100 Continue sent if asked
				// for), so the upstream need not be asked again.
				pr.Out.Header.Del("Expect")
			},
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				// Nothing has been written yet. A request that never left may
				// go to the next instance, and so may a read, whatever
				// happened to it: reads have no effect.
				retry := notSent(err) || r.Method == http.MethodGet || r.Method == http.MethodHead
				if a, ok := r.Context().Value(attemptKey{}).(*attempt); ok && retry && r.Context().Err() == nil {
					a.notSent = err // pool.serve tries the next instance
					return
				}
				if errors.Is(err, context.Canceled) {
					return // the client went away
				}
				log.Warn("upstream failed", "backend", name, "upstream", target.String(), "err", err)
				unavailable(w, r)
			},
		}})
	}
	return p
}

// serve sends r to the next instance in turn, and to the others for as long
// as they cannot be connected to. Instances that could not be connected to
// a moment ago come last.
func (p *pool) serve(w http.ResponseWriter, r *http.Request, body []byte) {
	n := uint64(len(p.upstreams))
	start := p.next.Add(1) - 1
	now := p.now().UnixNano()
	order := make([]*upstream, 0, n)
	var later []*upstream
	for i := range n {
		u := p.upstreams[(start+i)%n]
		if u.downUntil.Load() > now {
			later = append(later, u)
		} else {
			order = append(order, u)
		}
	}
	for _, u := range append(order, later...) {
		a := &attempt{}
		u.proxy.ServeHTTP(w, withBody(r.WithContext(context.WithValue(r.Context(), attemptKey{}, a)), body))
		if a.notSent == nil {
			if u.downUntil.Swap(0) != 0 {
				p.log.Info("instance reachable again", "backend", p.name, "upstream", u.url.String())
			}
			return // answered, one way or another
		}
		if u.downUntil.Swap(p.now().Add(downFor).UnixNano()) == 0 {
			p.log.Warn("instance unreachable; trying the others first", "backend", p.name,
				"upstream", u.url.String(), "err", a.notSent)
		}
	}
	if r.Context().Err() != nil {
		return // the client went away
	}
	p.log.Warn("every instance is unreachable", "backend", p.name, "instances", len(p.upstreams))
	unavailable(w, r)
}

// withBody gives r (a shallow copy of the incoming request) a fresh reader
// over the buffered body, with a known length.
func withBody(r *http.Request, body []byte) *http.Request {
	r.TransferEncoding = nil
	r.ContentLength = int64(len(body))
	if len(body) == 0 {
		r.Body, r.GetBody = http.NoBody, nil
		return r
	}
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r.Body, _ = r.GetBody()
	return r
}

// notSent reports whether err means that no connection to the upstream was
// made, so the request cannot have reached it: a dial error (refused,
// unreachable, no such host, connect timeout).
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func unavailable(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Retry-After", "1")
	httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusBadGateway, "upstream-unavailable", "",
		"the service behind this route is unreachable"))
}

// UpstreamReady returns a readiness check that asks base's /readyz.
func UpstreamReady(base *url.URL) func() error {
	client := &http.Client{Timeout: 2 * time.Second}
	return func() error {
		resp, err := client.Get(base.JoinPath("/readyz").String())
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s is not ready (%s)", base, resp.Status)
		}
		return nil
	}
}

// AnyReady returns a readiness check that passes when at least one of the
// instances at bases is ready. It asks them all at once and returns at the
// first ready one; when none is, the error names every failure.
func AnyReady(bases []*url.URL) func() error {
	checks := make([]func() error, len(bases))
	for i, base := range bases {
		checks[i] = UpstreamReady(base)
	}
	return func() error {
		if len(checks) == 0 {
			return errors.New("no instance configured")
		}
		errs := make(chan error, len(checks)) // buffered: late answers never block
		for _, check := range checks {
			go func() { errs <- check() }()
		}
		var failures []string
		for range checks {
			err := <-errs
			if err == nil {
				return nil
			}
			failures = append(failures, err.Error())
		}
		sort.Strings(failures)
		return fmt.Errorf("no instance is ready: %s", strings.Join(failures, "; "))
	}
}
