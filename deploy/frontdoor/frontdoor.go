// Package frontdoor is the single entry point of the API on :8080. It only
// routes: reads (GET, HEAD) go to query-svc and writes to command-svc, so a
// client sees one REST API while each side scales on its own.
//
// Each side may run as several instances, each the owner of some of the
// partitions of its consumer group. The front door routes like a Kafka
// client that knows the partition leaders: a request for a profile (GET
// /api/profile/{uid} and its /history, PUT and DELETE /api/profile/{uid})
// goes straight to the owner of its uid's partition,
// kafkax.Partition(uid, n), so that no instance has to forward it. The
// routing table of each service comes from its instances: the front door
// reads GET /routing (routing.TablePath) of one instance after the other,
// every second, and at once (at most every 100 ms) when an answer shows
// that the table is stale: X-Profiles-Hops above 0 (the instance it sent
// to forwarded the request), or X-Served-By naming another instance than
// the owner it sent to. The answer itself teaches the new owner of that
// partition at once (see table.learn). The instances report the number of
// partitions too, so the front door needs no setting for it, and it
// reaches an owner at the URL the owner advertises to its peers, through
// the same instance list when that instance is one of those configured.
//
// The table is read from the instances rather than from Kafka: each
// instance already keeps its group's table up to date (query-svc across
// its snapshot generations, whose groups change name), so the front door
// needs neither Kafka credentials nor the groups' names, and stays a plain
// HTTP proxy. A table polled from an instance is a hint, never a promise:
// every instance still forwards a request for a partition it does not own
// (platform/routing), which is the safety net for a stale table, and
// answers for a partition only while it owns it.
//
// Requests without a key the front door can compute go round-robin over
// the instances of their service: a search by email and a POST are placed
// by an HMAC of the normalized email under PII_KEK (pii.Codec.EmailKey),
// and the front door, which faces the clients, does not hold that key. So
// do keyed requests while the front door knows no table (at start, or
// with REPLICA_MODE=full, where every instance serves every partition),
// and requests whose owner could not be connected to a moment ago.
//
// When an instance cannot be connected to (the request never left the
// front door), the next instance of the same service is tried, whatever
// the method. Once a write has been sent, its outcome is final: a response
// is passed on as is, and a failure mid-request is a 502, never a retry. A
// read that fails mid-request (its instance died) is tried on the next
// instance. X-Served-By and X-Profiles-Hops come from the instances, as
// they set them: the front door is not a hop.
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
	"encoding/json"
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
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.opentelemetry.io/otel/trace"

	"profiles/platform/config"
	"profiles/platform/httpx"
	"profiles/platform/kafkax"
	"profiles/platform/routing"
	"profiles/platform/tracing"
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

// FrontDoor is the front door's API handler (New). Run keeps its routing
// tables; without it, every request goes round-robin.
type FrontDoor struct {
	write, read *pool
	stop        <-chan struct{}
}

// New returns the front door handler for the instances of command-svc and
// of query-svc, given by their base URLs. Both lists must be non-empty.
func New(commandURLs, queryURLs []*url.URL, log *slog.Logger, opts ...Option) (*FrontDoor, error) {
	if len(commandURLs) == 0 || len(queryURLs) == 0 {
		return nil, errors.New("frontdoor: every service needs at least one instance URL")
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	transport := tracing.Transport(newTransport())
	return &FrontDoor{
		write: newPool("command-svc", commandURLs, transport, log),
		read:  newPool("query-svc", queryURLs, transport, log),
		stop:  o.stop,
	}, nil
}

// ServeHTTP implements http.Handler. The request's server span
// (tracing.Middleware) is named after its API route (apiRoute), and so are
// the client spans of its attempts at the instances, which carry its
// trace on (tracing.Transport).
func (f *FrontDoor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if ctx := r.Context(); trace.SpanContextFromContext(ctx).IsValid() {
		r = r.WithContext(tracing.SetRoute(ctx, r.Method, apiRoute(r.URL.Path)))
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == StreamPath:
		serveStream(w, r, f.read, f.stop)
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		f.read.serve(w, r, body)
	default:
		f.write.serve(w, r, body)
	}
}

// Run keeps the routing tables of both services (see pool.run) until ctx
// ends; it returns nil then (a service.Task).
func (f *FrontDoor) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() { f.write.run(ctx); close(done) }()
	f.read.run(ctx)
	<-done
	return nil
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
	name string
	// upstreams are the configured instances: the table is read from
	// them, and a request without a known owner goes to them round-robin.
	upstreams []*upstream
	next      atomic.Uint64
	log       *slog.Logger
	now       func() time.Time // time.Now; tests change it
	epoch     time.Time        // downUntil counts from here
	transport http.RoundTripper

	// table is the group's routing table, nil while none is known.
	table atomic.Pointer[table]
	// kick asks run to read the table again soon (buffered: one pending
	// request stands for any number).
	kick     chan struct{}
	pollNext atomic.Uint64
	client   *http.Client // reads the table

	// routed counts requests by route (routedRequests): owner, fallback,
	// unkeyed.
	routed    map[string]prometheus.Counter
	stale     prometheus.Counter
	notServed prometheus.Counter

	mu sync.Mutex
	// byURL holds every upstream, configured or learned from a table, by
	// its URL; byID the configured ones by the instance id they report.
	// Instances that leave stay here: an entry is a URL and its proxy.
	byURL map[string]*upstream
	byID  map[string]*upstream
}

type upstream struct {
	url   *url.URL
	proxy *httputil.ReverseProxy
	// downUntil is when (in nanoseconds since the pool's epoch, on the
	// monotonic clock: a step of the wall clock must not keep an instance
	// last for minutes) an instance that could not be
	// connected to is tried in turn again; until then it is tried only when
	// every other instance has failed too. Zero: it was reachable last time.
	downUntil atomic.Int64
}

// downFor is how long an instance that could not be connected to is tried
// last. It spares requests a connection attempt to an instance that is
// down (which can take up to dialTimeout), and the log a line per request.
const downFor = 2 * time.Second

// How often the table is read: every pollEvery; after an answer that shows
// it stale, at once, but no sooner than pollGap after the last read; every
// pollUnstable while the group rebalances; and no more than every
// pollEvery while no instance answers with a table.
const (
	pollEvery    = time.Second
	pollGap      = 100 * time.Millisecond
	pollUnstable = 200 * time.Millisecond
	pollTimeout  = time.Second
)

// attempt is what one try of a request to one instance carries in its
// context: how the upstream's ErrorHandler tells pool.serve that the
// request was not sent (so another instance may be tried), and what
// ModifyResponse needs to learn from the answer.
type attempt struct {
	notSent error
	// keyed: the request has a key (keyOf); part is its partition of n
	// by the table, -1 when there was none.
	keyed   bool
	part, n int32
	// owner is the owner the table named, when the request went to it.
	owner string
	// last: no other instance is left to try, so an answer that says it
	// served nothing (routing.HeaderNotServed) is passed on.
	last bool
}

// errNotServed is the error of an attempt that an instance answered with
// routing.HeaderNotServed: it had no effect, and the next instance is
// tried.
var errNotServed = errors.New("the instance served nothing")

type attemptKey struct{}

var (
	routedRequests = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "profiles_frontdoor_requests_total",
		Help: "Requests by backend (command-svc, query-svc) and route: owner (sent to the owner of the key's partition, as the routing table names it), fallback (a key, but no table yet, no owner known, or the owner unreachable: round-robin) or unkeyed (no key the front door can compute, such as a search or a POST: round-robin).",
	}, []string{"backend", "route"})
	notServedAnswers = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "profiles_frontdoor_not_served_total",
		Help: "Requests an instance answered 503 having done nothing with them (it had no owner for their partition: cut off from its group, or no owner within its wait), which the front door then sent to the next instance.",
	}, []string{"backend"})
	staleAnswers = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "profiles_frontdoor_stale_routes_total",
		Help: "Requests sent to the owner the routing table named that another instance served (the table was stale; the instance forwarded the request).",
	}, []string{"backend"})
	tablePolls = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "profiles_frontdoor_table_reads_total",
		Help: "Reads of a service's routing table from its instances, by result: ok, unstable (the group was rebalancing; the table in use is kept) or failed (no instance answered with one).",
	}, []string{"backend", "result"})
)

func newPool(name string, urls []*url.URL, transport http.RoundTripper, log *slog.Logger) *pool {
	p := &pool{name: name, log: log, now: time.Now, epoch: time.Now(), transport: transport,
		kick: make(chan struct{}, 1), client: &http.Client{Transport: transport, Timeout: pollTimeout},
		byURL: map[string]*upstream{}, byID: map[string]*upstream{},
		routed: map[string]prometheus.Counter{}, stale: staleAnswers.WithLabelValues(name),
		notServed: notServedAnswers.WithLabelValues(name)}
	for _, route := range []string{"owner", "fallback", "unkeyed"} {
		p.routed[route] = routedRequests.WithLabelValues(name, route)
	}
	for _, target := range urls {
		u := p.newUpstream(target)
		p.upstreams = append(p.upstreams, u)
		p.byURL[target.String()] = u
	}
	return p
}

func (p *pool) newUpstream(target *url.URL) *upstream {
	name, log := p.name, p.log
	return &upstream{url: target, proxy: &httputil.ReverseProxy{
		Transport:  p.transport,
		BufferPool: httpx.ProxyBuffers,
		ErrorLog:   slog.NewLogLogger(log.Handler(), slog.LevelWarn),
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
		ModifyResponse: func(resp *http.Response) error {
			a, ok := resp.Request.Context().Value(attemptKey{}).(*attempt)
			if by := resp.Header.Get(routing.HeaderNotServed); by != "" {
				// The instance had no owner for the request, and did
				// nothing with it: another instance's table may name one.
				resp.Header.Del(routing.HeaderNotServed)
				if ok && !a.last {
					return fmt.Errorf("%w: %s answered %s", errNotServed, by, resp.Status)
				}
			}
			if ok {
				p.observe(a, resp.Header)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			// Nothing has been written yet. A request that never left may
			// go to the next instance, and so may a read, whatever
			// happened to it: reads have no effect.
			retry := notSent(err) || errors.Is(err, errNotServed) || r.Method == http.MethodGet || r.Method == http.MethodHead
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
	}}
}

// serve sends r to the owner of its key's partition, if the table names
// one that was reachable a moment ago; otherwise, or if the owner cannot
// be connected to, to the next instance in turn, and to the others for as
// long as they cannot be connected to. Instances that could not be
// connected to a moment ago come last.
func (p *pool) serve(w http.ResponseWriter, r *http.Request, body []byte) {
	key, keyed := keyOf(r.Method, r.URL.Path)
	part, n, own := int32(-1), int32(0), owner{}
	if keyed {
		t := p.table.Load()
		part, own = t.ownerOf(key)
		if t != nil {
			n = t.n
		}
	}
	now := p.sinceEpoch()
	route := "unkeyed"
	switch {
	case own.u != nil && own.u.downUntil.Load() <= now:
		route = "owner"
	case keyed:
		route = "fallback"
	}
	p.routed[route].Inc()
	if route == "owner" {
		if p.try(w, r, body, own.u, &attempt{keyed: true, part: part, n: n, owner: own.id, last: len(p.upstreams) == 1}) {
			return
		}
		p.refreshSoon() // the owner is gone: the table is stale
	}

	count := uint64(len(p.upstreams))
	start := p.next.Add(1) - 1
	order := make([]*upstream, 0, count)
	var later []*upstream
	for i := range count {
		u := p.upstreams[(start+i)%count]
		switch {
		case route == "owner" && u == own.u:
			// Tried above.
		case u.downUntil.Load() > now:
			later = append(later, u)
		default:
			order = append(order, u)
		}
	}
	order = append(order, later...)
	for i, u := range order {
		if p.try(w, r, body, u, &attempt{keyed: keyed, part: part, n: n, last: i == len(order)-1}) {
			return
		}
	}
	if r.Context().Err() != nil {
		return // the client went away
	}
	p.log.Warn("every instance is unreachable", "backend", p.name, "instances", len(p.upstreams))
	unavailable(w, r)
}

// try sends r to u, and reports whether it was answered, one way or
// another; false means that another instance may be tried (a.notSent).
func (p *pool) try(w http.ResponseWriter, r *http.Request, body []byte, u *upstream, a *attempt) bool {
	u.proxy.ServeHTTP(w, withBody(r.WithContext(context.WithValue(r.Context(), attemptKey{}, a)), body))
	if a.notSent == nil {
		if u.downUntil.Swap(0) != 0 {
			p.log.Info("instance reachable again", "backend", p.name, "upstream", u.url.String())
		}
		return true
	}
	if errors.Is(a.notSent, errNotServed) {
		// It answers, but served nothing: it stays in turn (its other
		// partitions may be fine), and the next instance is tried.
		p.notServed.Inc()
		return false
	}
	if u.downUntil.Swap(p.sinceEpoch()+int64(downFor)) == 0 {
		p.log.Warn("instance unreachable; trying the others first", "backend", p.name,
			"upstream", u.url.String(), "err", a.notSent)
	}
	return false
}

// observe learns from the answer to a keyed request: the instance that
// served it (X-Served-By) owns its partition. If that is not the owner the
// table named, or the request took a hop between instances, the table is
// stale: the partition's owner is corrected at once, and the whole table
// read again soon.
func (p *pool) observe(a *attempt, h http.Header) {
	if !a.keyed {
		return
	}
	by, hops := h.Get(routing.HeaderServedBy), h.Get(routing.HeaderHops)
	if by == "" {
		return // not served by an owner (an invalid key, a 503)
	}
	if h.Get(routing.HeaderStandby) != "" {
		// Served from a warm copy because the owner could not be reached:
		// it says nothing of who owns the partition now.
		p.refreshSoon()
		return
	}
	forwarded := hops != "" && hops != "0"
	if a.owner != "" && (forwarded || by != a.owner) {
		p.stale.Inc()
	}
	if forwarded || (a.owner != "" && by != a.owner) {
		p.refreshSoon()
	}
	for {
		t := p.table.Load()
		learned := t.learn(a.part, a.n, by)
		if learned == nil || p.table.CompareAndSwap(t, learned) {
			return
		}
	}
}

// refreshSoon asks run to read the table again.
func (p *pool) refreshSoon() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// run reads the table (see poll) every pollEvery, and when refreshSoon
// asks, until ctx ends.
func (p *pool) run(ctx context.Context) {
	var last time.Time
	wait, gap := time.Duration(0), pollGap
	for {
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		case <-p.kick:
			timer.Stop()
			if d := gap - p.now().Sub(last); d > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(d):
				}
			}
		}
		result := p.poll(ctx)
		if ctx.Err() != nil {
			return
		}
		tablePolls.WithLabelValues(p.name, result).Inc()
		last = p.now()
		switch result {
		case "ok":
			wait, gap = pollEvery, pollGap
		case "unstable":
			wait, gap = pollUnstable, pollGap
		default:
			wait, gap = pollEvery, pollEvery
		}
	}
}

// poll reads the routing table from one configured instance after the
// other (a different one first each time), until one answers, and keeps
// what it says: "ok" (a new table), "unstable" (the group rebalances; the
// table in use is kept) or "failed" (no instance answered with a table;
// the table in use is kept too, and the instances forward what it sends
// to owners that have left).
func (p *pool) poll(ctx context.Context) string {
	n := uint64(len(p.upstreams))
	start := p.pollNext.Add(1) - 1
	var errs []string
	for i := range n {
		u := p.upstreams[(start+i)%n]
		rep, err := p.fetch(ctx, u)
		if err == nil && rep.Mode == "full" {
			// Every instance serves every partition: any will do.
			p.table.Store(nil)
			return "ok"
		}
		var t *table
		if err == nil {
			t, err = buildTable(rep, p.upstreamOf)
		}
		if errors.Is(err, errNotStable) {
			return "unstable"
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", u.url, err))
			continue
		}
		if p.table.Swap(t) == nil {
			p.log.Info("routing table known: requests go straight to the owners", "backend", p.name,
				"partitions", t.n, "members", len(t.ids), "from", u.url.String())
		}
		return "ok"
	}
	if ctx.Err() == nil && p.table.Load() != nil {
		p.log.Debug("cannot read the routing table", "backend", p.name, "errs", strings.Join(errs, "; "))
	}
	return "failed"
}

// fetch reads u's routing table, and remembers u's instance id.
func (p *pool) fetch(ctx context.Context, u *upstream) (routing.Table, error) {
	var rep routing.Table
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.url.JoinPath(routing.TablePath).String(), nil)
	if err != nil {
		return rep, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return rep, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return rep, fmt.Errorf("%s", resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxBody)).Decode(&rep); err != nil {
		return rep, err
	}
	if rep.Self.ID != "" {
		p.mu.Lock()
		p.byID[rep.Self.ID] = u
		p.mu.Unlock()
	}
	return rep, nil
}

// upstreamOf returns the upstream that reaches m: the configured instance
// that reported m's id, else the one of m's URL, made on first use; nil
// when m's URL is not an http(s) base URL.
func (p *pool) upstreamOf(m kafkax.Member) *upstream {
	p.mu.Lock()
	defer p.mu.Unlock()
	if u := p.byID[m.ID]; u != nil {
		return u
	}
	target := memberURL(m.URL)
	if target == nil {
		return nil
	}
	if u := p.byURL[target.String()]; u != nil {
		return u
	}
	u := p.newUpstream(target)
	p.byURL[target.String()] = u
	return u
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

// sinceEpoch returns the nanoseconds since the pool was made, on the
// monotonic clock (time.Now's readings subtract monotonically), never 0.
func (p *pool) sinceEpoch() int64 { return max(int64(p.now().Sub(p.epoch)), 1) }
