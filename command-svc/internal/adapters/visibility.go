package adapters

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"profiles/events"
	"profiles/platform/httpx"
	"profiles/platform/peer"
	"profiles/platform/tracing"
)

// QueryVisibility waits until query-svc serves a change, by asking it with
// GET /api/profile/{uid}?minVersion=N and, for each touched email,
// GET /api/search?email=E&uid=U&minVersion=N. query-svc holds such a
// request open until its view has that version, and routes it to the owner
// of the uid's or the email's partition, so any instance will do: the
// requests are spread over BaseURLs.
//
// When every touched email's index entry is in the uid's partition (a
// POST's uid is placed so, see app.ColocatedUID), one owner holds them all,
// and the wait is one request instead: GET peer.RouteVisible, which waits
// for the profile and each email at once. An instance that does not know
// that route (404: an older query-svc, during a rolling upgrade), or that
// places the keys in other partitions than this one does (400: a
// partition count that differs between the services), gets the requests
// of each key.
type QueryVisibility struct {
	// BaseURLs of query-svc instances, e.g. http://127.0.0.1:8082.
	BaseURLs []string
	Client   *http.Client
	// Timeout bounds one wait.
	Timeout time.Duration
	// Every makes each wait ask every instance instead of one: with
	// query-svc in full-replica mode, each instance has its own copy.
	Every bool
	// Sign, if set, signs each request (see auth.Signer): query-svc
	// serves a signed request without a caller's token as a peer's read.
	Sign func(r *http.Request, body []byte)
	// PartitionOf places a key (a uid, or an email's index key) and
	// EmailKey turns an email into its index key, as query-svc does. With
	// both set, a wait whose emails are all in the uid's partition is one
	// request (peer.RouteVisible); with either nil, every wait asks once
	// per key.
	PartitionOf func(key string) int32
	EmailKey    events.EmailKeyer

	next atomic.Uint64
}

// WaitVisible returns nil once readers see uid at version or later, by uid
// and under every email of emails. A 404 for the uid also counts: the
// profile was deleted at that version or after, and nothing follows a
// delete.
//
// The wait is traced as a span "wait visible" (with the version, never the
// uid or an email) in the trace of ctx; each request it sends is a client
// span named after its route template (/api/profile/{uid},
// /api/search), whose trace context query-svc continues, when Client's
// transport is traced (httpx.PeerTransport).
func (v *QueryVisibility) WaitVisible(ctx context.Context, uid string, version int64, emails []string) (err error) {
	began := time.Now()
	var span trace.Span
	if tracing.Enabled() {
		ctx, span = tracing.Tracer().Start(ctx, "wait visible", trace.WithAttributes(
			attribute.Int64("profiles.min_version", version), attribute.Int("profiles.emails", len(emails))))
	}
	defer func() {
		result := "visible"
		if err != nil {
			result = "not_visible"
		}
		visibleSeconds.WithLabelValues(result).Observe(time.Since(began).Seconds())
		if span != nil {
			if err != nil {
				span.SetStatus(codes.Error, result)
			}
			span.End()
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, v.Timeout)
	defer cancel()
	if v.colocated(uid, emails) {
		err := v.waitAll(ctx, []target{{peer.RouteVisible, peer.VisiblePath(uid, version, emails), true}})
		if !errors.Is(err, errNotOneWait) {
			return err
		}
	}
	ver := strconv.FormatInt(version, 10)
	targets := []target{{"/api/profile/{uid}", "/api/profile/" + url.PathEscape(uid) + "?minVersion=" + ver, false}}
	for _, e := range emails {
		targets = append(targets, target{"/api/search", "/api/search?" + url.Values{"email": {e}, "uid": {uid}, "minVersion": {ver}}.Encode(), false})
	}
	return v.waitAll(ctx, targets)
}

// target is one request of a wait: its route template (the name of its
// client span), its path and query, and whether it is a request of
// peer.RouteVisible, which answers 204 once visible.
type target struct {
	route, path string
	visible     bool
}

// colocated reports whether every email's index entry is in uid's
// partition, so that one request of peer.RouteVisible waits for them all.
func (v *QueryVisibility) colocated(uid string, emails []string) bool {
	if v.PartitionOf == nil || v.EmailKey == nil {
		return false
	}
	p := v.PartitionOf(uid)
	for _, e := range emails {
		if v.PartitionOf(v.EmailKey.EmailKey(e)) != p {
			return false
		}
	}
	return true
}

// waitAll waits for every target at once (at every instance with Every),
// and returns the first error, after which it stops the others.
func (v *QueryVisibility) waitAll(ctx context.Context, targets []target) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bases := []string{""} // "" lets wait pick one instance
	if v.Every {
		bases = v.BaseURLs
	}
	errc := make(chan error, len(targets)*len(bases))
	for _, t := range targets {
		tctx := tracing.WithRoute(ctx, t.route)
		for _, base := range bases {
			go func() { errc <- v.wait(tctx, base, t) }()
		}
	}
	var first error
	for range len(targets) * len(bases) {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// errNotOneWait is a wait's error when an instance answered a request of
// peer.RouteVisible with 404 (it does not know the route) or 400 (it
// places an email's index entry in another partition than the uid's).
var errNotOneWait = errors.New("query-svc cannot wait for the keys in one request of " + peer.RouteVisible)

// visibleSeconds is the write-to-visible latency: from the commit of a
// write to the moment query-svc shows it (the wait of a write that did
// not ask for respond-async).
var visibleSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "profiles_command_visible_seconds",
	Help:    "Time from a write's commit until query-svc shows it (read-your-writes wait), by result: visible, or not_visible (VISIBILITY_TIMEOUT passed, or the write's caller went away).",
	Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
}, []string{"result"})

// wait asks base, or with base "" one instance and the next one whenever
// an instance cannot be reached (it may be down) or answers that it cannot
// answer now (502, 503, 504: a drain, a rebalance, a wait of its own that
// ran out), until ctx ends. Any other answer ends the wait.
//
// Each request asks for 102 Processing at once (httpx.HeaderAlive): an
// instance that neither answers nor sends it within aliveWithin is cut
// off from this one (a network partition drops what is sent, so the
// request would hang until ctx ends), and the request is given up. Once
// every instance has been silent in a row, the wait ends with
// ErrReadersUnreachable instead of waiting out VISIBILITY_TIMEOUT: the
// write answers 202 in about a second, not ten.
func (v *QueryVisibility) wait(ctx context.Context, base string, t target) error {
	path := t.path
	pick := base == ""
	silent, silentMax := 0, 2 // one retry of a fixed base
	if pick {
		silentMax = len(v.BaseURLs)
	}
	for {
		if pick {
			base = v.BaseURLs[v.next.Add(1)%uint64(len(v.BaseURLs))]
		}
		resp, wasSilent, err := v.ask(ctx, base+path)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch {
			case t.visible && resp.StatusCode == http.StatusNoContent:
				return nil
			case t.visible && (resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusBadRequest):
				return errNotOneWait
			case !t.visible && (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNotFound):
				return nil
			case resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout:
				err = fmt.Errorf("query-svc answered %s", resp.Status)
			default:
				return fmt.Errorf("wait for %s: query-svc answered %s", path, resp.Status)
			}
		}
		if wasSilent {
			silent++
		} else {
			silent = 0
		}
		if wasSilent && silent >= silentMax && ctx.Err() == nil {
			return fmt.Errorf("wait for %s: %w", path, ErrReadersUnreachable)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", path, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ErrReadersUnreachable is why a visibility wait ended early: no query-svc
// instance answered, not even with 102 Processing, within aliveWithin.
var ErrReadersUnreachable = errors.New("no query-svc instance answers")

// aliveWithin is how long an instance may take to answer or send 102
// Processing before it counts as cut off. An instance that runs answers
// at once (httpx.AnswerAlive), before it looks at the request.
var aliveWithin = time.Second

// ask sends one GET of url, asking for 102 Processing at once. silent
// reports that nothing at all came back within aliveWithin, and the
// request was given up.
func (v *QueryVisibility) ask(ctx context.Context, url string) (resp *http.Response, silent bool, err error) {
	var heard atomic.Bool
	actx, cancel := context.WithCancel(ctx)
	defer func() {
		if err != nil {
			cancel()
		}
	}()
	actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{
		Got1xxResponse: func(int, textproto.MIMEHeader) error { heard.Store(true); return nil },
	})
	req, err := http.NewRequestWithContext(actx, http.MethodGet, url, nil)
	if err != nil {
		return nil, false, err
	}
	req.Header.Set(httpx.HeaderAlive, "1")
	if v.Sign != nil {
		v.Sign(req, nil)
	}
	var gaveUp atomic.Bool
	timer := time.AfterFunc(aliveWithin, func() {
		if !heard.Load() {
			gaveUp.Store(true)
			cancel()
		}
	})
	resp, err = v.Client.Do(req)
	timer.Stop()
	if err != nil {
		return nil, gaveUp.Load(), err
	}
	// The body is read under actx: cancel it once the body is closed.
	resp.Body = cancelOnClose{resp.Body, cancel}
	return resp, false, nil
}

// cancelOnClose cancels a request's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
