// Package routing sends each API request to the instance that owns the
// partition of its key, in at most one hop. Both services use it: any
// instance accepts any request, serves it when it owns the key's partition,
// and forwards it to the owner otherwise, as learned from the consumer group.
package routing

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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"profiles/platform/httpx"
	"profiles/platform/kafkax"
)

// Headers of routed requests and their responses.
const (
	// HeaderServedBy names the instance that served the request.
	HeaderServedBy = "X-Served-By"
	// HeaderHops is the number of forwards the request took: 0 or 1.
	HeaderHops = "X-Profiles-Hops"
	// HeaderForwardedBy marks a forwarded request with the forwarder's id
	// (ids, comma-separated, after a second hop). An instance forwards a
	// request that carries it only in the case HeaderEpoch describes, so
	// no request takes more than two hops, and in a steady state one.
	HeaderForwardedBy = "X-Profiles-Forwarded-By"
	// HeaderEpoch carries the epoch of the table by which the forwarder
	// chose the owner (query-svc: a snapshot generation; see
	// EpochRouter.RouteWithEpoch). During a switch to a new generation, two
	// instances may route by different generations' tables. An instance
	// that receives a request routed by another epoch serves it if it
	// serves the partition in that epoch (it runs both for a while), and
	// otherwise forwards it once more by its own table, instead of waiting
	// for a partition it will never own.
	HeaderEpoch = "X-Profiles-Routing-Epoch"
	// HeaderRequestID names a write across the forwards of the routing
	// layer: the first instance to forward it gives it a UUIDv7, and every
	// forward of it, including one sent again to a new owner, carries the
	// same. The owner records it with the write's last event, so that a
	// write sent again after its first owner applied it and then stopped
	// answering is recognized, and answered, instead of applied twice.
	HeaderRequestID = "X-Profiles-Request-Id"
	// HeaderNotWritten, on a handler's answer to a write served here,
	// says that the write was refused with nothing written because this
	// instance does not (or no longer) write its partition (a rebalance
	// moved it, or fenced the transaction). The routing layer then drops
	// the answer and routes the write again, to the new owner, while its
	// wait allows. It never leaves the instance.
	HeaderNotWritten = "X-Profiles-Not-Written"
	// HeaderNotServed, on an instance's 503 answer, says that the request
	// had no effect there: its table named no owner it could serve or
	// forward the request to, within its wait or at once. Most often it
	// is cut off from its group coordinator and its lease has run out,
	// so it can neither serve the partition nor learn who does now; or
	// the request was forwarded to it, and its table names another owner
	// (one of the two tables is stale, and a request is never forwarded
	// twice). A forwarding instance then routes the request again by its
	// own table, which may already name the new owner, while its own wait
	// allows, and the front door tries the next instance, instead of
	// passing the 503 on; either removes the header from an answer it
	// does pass on.
	HeaderNotServed = "X-Profiles-Not-Served"
	// HeaderStandby, on an answer to a read, names the instance that
	// served it from its warm copy of a partition it does not own (see
	// StandbyReader), because the owner could not be reached. X-Served-By
	// names it too; this header tells a client that learns owners from
	// X-Served-By (the front door) not to take it for the owner.
	HeaderStandby = "X-Profiles-Standby"
	// HeaderStandbyRead, on a forwarded read, asks its receiver to serve
	// it from its warm copy of the partition (StandbyReader): the
	// forwarder could not dial the owner and keeps no copy itself. The
	// receiver serves it so, or answers 503 with HeaderNotServed.
	HeaderStandbyRead = "X-Profiles-Standby-Read"
)

// Holder is implemented by a Router that can tell at once, without
// waiting, whether this instance still serves partition p, in epoch e for
// an EpochRouter (any e otherwise). A read served here is answered only if
// Holds is still true after the read: an instance that was frozen while
// it read, and lost p meanwhile, drops its answer (see kafkax.Group's
// lease).
type Holder interface {
	Holds(p int32, e int) bool
}

// Acquirer is implemented by a Router whose instance may hand a partition
// over while it still serves it (kafkax.Group at a drain): a request routed
// here acquires p before it is served and releases it when done, so that
// the hand-over waits for the requests in flight, and Acquire refuses (ok
// false) once the hand-over has begun, so that the request is routed again
// (it then waits for, and goes to, the new owner).
type Acquirer interface {
	Acquire(p int32, epoch int) (release func(), ok bool)
}

// Interrupter is implemented by a Router that can cut short a read served
// here once this instance stops serving its partition, or starts handing
// it over (a drain): Interrupt returns a context derived from ctx that is
// cancelled then, and a cancel func that the caller calls when the read
// is done. A read that waits for the view (a minVersion long-poll) would
// otherwise wait on a view that no longer follows the partition, or hold
// a drain back until it times out; cut short, its answer is dropped and
// the read is routed again, to the new owner.
type Interrupter interface {
	Interrupt(ctx context.Context, p int32, epoch int) (context.Context, context.CancelFunc)
}

// NowRouter is implemented by a Router that can tell at once, without
// waiting, that Route would route p here now, and by which epoch (0 for a
// Router without epochs). A read it routes here is served without the
// routing wait's context; a false answer says nothing, and the read is
// routed by Route.
type NowRouter interface {
	ServesNow(p int32) (epoch int, ok bool)
}

// ConnectedRouter is implemented by a Router that can tell whether its
// table still follows the group: Connected is false while this
// instance's group coordinator does not answer it, and then the table
// cannot change, so routing a request again by it cannot find a new
// owner. A Router without it counts as connected.
type ConnectedRouter interface {
	Connected() bool
}

// StandbyReader is implemented by a Router whose instance keeps warm
// copies of partitions it does not own (query-svc's standbys). When the
// owner of p cannot be reached, a read of p is served from such a copy
// instead of waiting for p to move: ReadIndex returns once the copy holds
// everything p held when it was called, so that the answer is as fresh
// as the owner's (see follower.Standby.ReadIndex), and the caller calls
// release once it has answered. It fails when this instance keeps no warm
// copy of p, or the copy did not catch up in time; the read then waits
// for the owner as before.
type StandbyReader interface {
	ReadIndex(ctx context.Context, p int32) (release func(), err error)
	// StandbyOf names the instances that keep a warm copy of p, by this
	// instance's table, nearest first: a read whose owner cannot be
	// dialed, and that this instance has no warm copy of, is sent to the
	// first (HeaderStandbyRead), instead of waiting for the owner.
	StandbyOf(p int32) []kafkax.Member
}

// EpochRouter is implemented by a Router whose table can change wholesale
// (query-svc's snapshot generations, see HeaderEpoch).
type EpochRouter interface {
	Router
	// RouteWithEpoch is Route, and also returns the epoch whose table
	// named the owner. It is not always the epoch this instance serves:
	// during a switch, an older epoch that still runs may answer for a
	// partition the serving one has not caught up with yet. A forwarded
	// request carries this epoch, so that its receiver looks p up in the
	// same table.
	RouteWithEpoch(ctx context.Context, p int32) (owner kafkax.Member, self bool, epoch int, err error)
	// RouteEpoch routes p by epoch e when this instance still (or
	// already) runs e and serves p there, and like RouteWithEpoch
	// otherwise. exact reports that the answer is e's.
	RouteEpoch(ctx context.Context, p int32, e int) (owner kafkax.Member, self, exact bool, epoch int, err error)
}

var forwards = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "profiles_routing_requests_total",
	Help: "Requests by routing outcome: local (served here), forwarded (sent to the owner), unavailable (no owner in time), lost (a read whose partition was lost while it read, routed again), rerouted (a write refused here with nothing written, routed again), not_served (a forward its owner served nothing of, routed again), standby (a read whose owner could not be dialed, served from this instance's warm copy at a read index), to_standby (such a read sent to the instance that keeps the warm copy).",
}, []string{"outcome"})

// Router tells where partition p is served; see kafkax.Group.Route.
type Router interface {
	Route(ctx context.Context, p int32) (owner kafkax.Member, self bool, err error)
}

// Routing wraps handlers of one service instance.
type Routing struct {
	Router Router
	Self   kafkax.Member
	// Wait bounds how long a request waits for an owner of its partition
	// (during a rebalance, or while a dead owner's session expires).
	Wait time.Duration
	Log  *slog.Logger
	// Sign, if set, signs every forward (see auth.Signer), after its
	// forwarding headers are set, so that the owner can tell it from a
	// client's request that only claims to be forwarded. The forward keeps
	// the caller's Authorization header, and the owner checks it again.
	Sign func(r *http.Request, body []byte)
	// Waits, if set, reports whether a read may wait (a long poll, such as
	// query-svc's minVersion): only such a read is made interruptible (see
	// Interrupter). A read that cannot wait ends at once, and the lease
	// check after it (Holder) decides its answer all the same. Nil: every
	// read may wait.
	Waits func(r *http.Request) bool

	servedBy []string // X-Served-By's value, shared by the answers of Handler
}

// Handler returns h wrapped so that it runs only on the owner of the
// partition partitionOf names. partitionOf returns false for a request it
// cannot place (an invalid key); such a request goes to h, which rejects it.
func (rt Routing) Handler(partitionOf func(*http.Request) (int32, bool), h http.Handler) http.Handler {
	rt.servedBy = []string{rt.Self.ID}[:1:1]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := partitionOf(r)
		if !ok {
			h.ServeHTTP(w, r)
			return
		}
		forwardedBy := r.Header.Get(HeaderForwardedBy)
		forwarded := forwardedBy != ""
		if forwarded && isRead(r) && r.Header.Get(HeaderStandbyRead) != "" && rt.serveStandby(r.Context(), w, r, p, h) {
			// Sent here for this instance's warm copy (forwardToStandby).
			// Without one (the partition moved here, or elsewhere) the read
			// is routed as any forwarded read: served if it is ours now,
			// answered not served otherwise.
			return
		}
		// notWritten is set once this instance refused the write here
		// having written nothing (HeaderNotWritten): the request is routed
		// again, and may take one more hop to the partition's new owner.
		// A read that lost its partition here is routed again the same way.
		notWritten := false
		if nr, ok := rt.Router.(NowRouter); ok && isRead(r) {
			// The steady state: a read of a partition served here. What
			// follows would find the same at once; the routing wait's
			// context is only needed when it does not.
			if epoch, ok := nr.ServesNow(p); ok {
				if rt.serveAcquired(r.Context(), w, r, p, epoch, hops(forwardedBy), h) {
					return
				}
				notWritten = true // handed over, or lost while it read
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), rt.Wait)
		defer cancel()
		rewaited := false
		for {
			if notWritten {
				// Handed over, or refused with nothing written: route
				// again, which waits for the new owner.
				select {
				case <-ctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
			}
			owner, self, epoch, err := rt.route(ctx, p)
			reforward := false
			if err == nil && !self && forwarded {
				reforward, owner, self, epoch, err = rt.epochRoute(ctx, r, p, owner, epoch)
			}
			if err == nil && !self && notWritten {
				reforward = true
			}
			if reforward && strings.Contains(forwardedBy, ",") {
				reforward = false // two hops already: answered not served below
			}
			if err == nil && !self && forwarded && !reforward {
				// The forwarder believed we own p, and our table names
				// another owner: one of the two tables is stale. Never
				// forward twice: answer that nothing was served here
				// (HeaderNotServed, below), and the forwarder routes the
				// request again by its own table, which may name us again
				// once we serve p, or the owner ours names.
				err = fmt.Errorf("%w: forwarded here, but this instance's table names %s as the owner of partition %d", kafkax.ErrNoOwner, owner.ID, p)
			}
			switch {
			case err != nil:
				forwards.WithLabelValues("unavailable").Inc()
				w.Header().Set(HeaderNotServed, rt.Self.ID) // nothing was served or forwarded
				rt.unavailable(w, r, p, err)
				return
			case self:
				if rt.serveAcquired(ctx, w, r, p, epoch, hops(forwardedBy), h) {
					return
				}
				notWritten = true
				if isRead(r) && ctx.Err() != nil && r.Context().Err() == nil && !rewaited {
					// A read that waited for the view past the routing
					// wait, and then lost its partition, gets one more
					// routing wait to find the new owner.
					rewaited = true
					ctx, cancel = context.WithTimeout(r.Context(), rt.Wait)
					defer cancel()
				}
			default:
				forwardsForwarded.Inc()
				rt.forwardWithRetry(ctx, w, r, p, owner, epoch, h)
				return
			}
		}
	})
}

// hops is the number of forwards a request took, from its
// HeaderForwardedBy.
func hops(forwardedBy string) int {
	if forwardedBy == "" {
		return 0
	}
	return 1 + strings.Count(forwardedBy, ",")
}

// epochRoute handles a forwarded request for a partition this instance
// does not serve by its own table, when the forwarder routed it by another
// epoch (see HeaderEpoch). The request is served here if this instance
// serves the partition in the forwarder's epoch; otherwise it may be
// forwarded once more, by this instance's table (reforward). A request
// routed by our own epoch is left to the caller's wait.
func (rt Routing) epochRoute(ctx context.Context, r *http.Request, p int32, owner kafkax.Member, epoch int) (reforward bool, _ kafkax.Member, self bool, _ int, err error) {
	er, ok := rt.Router.(EpochRouter)
	theirs, perr := strconv.Atoi(r.Header.Get(HeaderEpoch))
	if !ok || perr != nil || theirs == epoch {
		return false, owner, false, epoch, nil
	}
	owner, self, exact, epoch, err := er.RouteEpoch(ctx, p, theirs)
	return err == nil && !self && !exact, owner, self, epoch, err
}

// route is Router.Route, with the epoch of the answer when the Router has
// epochs (0 otherwise).
func (rt Routing) route(ctx context.Context, p int32) (kafkax.Member, bool, int, error) {
	if er, ok := rt.Router.(EpochRouter); ok {
		return er.RouteWithEpoch(ctx, p)
	}
	owner, self, err := rt.Router.Route(ctx, p)
	return owner, self, 0, err
}

// forwardWithRetry forwards r to owner. When the owner cannot even be
// dialed (it died, and its session has not expired yet, so the table still
// names it), nothing reached it, so the request is safe to send again, and
// a read is always safe to send again: it waits for the table to name a
// live owner, or for this instance to become the owner, until ctx ends.
func (rt Routing) forwardWithRetry(ctx context.Context, w http.ResponseWriter, r *http.Request, p int32, owner kafkax.Member, epoch int, h http.Handler) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxForwardBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusRequestEntityTooLarge, "body-too-large", "", "the body is too large to forward"))
		return
	case err != nil:
		// The client went away, or sent less than it announced.
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusBadRequest, "body-unreadable", "", "the request body could not be read: "+err.Error()))
		return
	}
	if !isRead(r) && r.Header.Get(HeaderRequestID) == "" {
		if id, err := uuid.NewV7(); err == nil {
			r.Header.Set(HeaderRequestID, id.String())
		}
	}
	for {
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		dialErr := rt.forward(w, r, body, p, owner, epoch)
		if dialErr == nil {
			return
		}
		if isRead(r) && unreachable(dialErr) && (rt.serveStandby(ctx, w, r, p, h) || rt.forwardToStandby(w, r, p, epoch)) {
			return
		}
		if cr, ok := rt.Router.(ConnectedRouter); ok && errors.Is(dialErr, errNotServed) && !isRead(r) && !cr.Connected() {
			// The owner has no owner for p either, and our table cannot
			// change before we reach our coordinator again (both of us
			// are cut off, or our coordinator is down): a write fails
			// now, as it would on the owner (it could not be appended
			// anyway). A read waits, as a read at an owner between
			// sessions does: the group, and with it a table, may come
			// back within the wait.
			forwards.WithLabelValues("unavailable").Inc()
			rt.unavailable(w, r, p, fmt.Errorf("%w, and this instance is cut off from its group too", dialErr))
			return
		}
		select {
		case <-ctx.Done():
			forwards.WithLabelValues("unavailable").Inc()
			rt.unavailable(w, r, p, fmt.Errorf("owner %s unreachable: %w", owner.ID, dialErr))
			return
		case <-time.After(200 * time.Millisecond):
		}
		var self bool
		if owner, self, epoch, err = rt.route(ctx, p); err != nil {
			rt.unavailable(w, r, p, err)
			return
		}
		if self {
			// The partition moved here meanwhile: serve it.
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			rt.serveHeld(w, r, p, epoch, 0, false, h)
			return
		}
	}
}

// forwardToStandby sends the read r of partition p, whose owner could not
// be dialed, to the first instance that keeps a warm copy of p, asking it
// to serve it from there (HeaderStandbyRead), and reports whether it
// answered. A read that was forwarded here already is not forwarded
// again, nor is one whose standby is this instance.
func (rt Routing) forwardToStandby(w http.ResponseWriter, r *http.Request, p int32, epoch int) bool {
	sr, ok := rt.Router.(StandbyReader)
	if !ok || r.Header.Get(HeaderForwardedBy) != "" {
		return false
	}
	standbys := sr.StandbyOf(p)
	if len(standbys) == 0 || standbys[0].ID == rt.Self.ID {
		return false
	}
	r.Header.Set(HeaderStandbyRead, "1")
	defer r.Header.Del(HeaderStandbyRead)
	r.Body = http.NoBody
	r.ContentLength = 0
	if err := rt.forward(w, r, nil, p, standbys[0], epoch); err != nil {
		return false // it served nothing: the caller goes on waiting for the owner
	}
	forwardsToStandby.Inc()
	return true
}

// unreachable reports whether a forward failed because its owner could not
// be dialed: it is gone, or cut off from this instance. An owner that
// answered, even that it served nothing, is alive and may be writing.
func unreachable(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// serveStandby serves the read r of partition p from this instance's warm
// copy of p (see StandbyReader), and reports whether it answered. The
// read has no body: it was sent to an owner that did not answer.
func (rt Routing) serveStandby(ctx context.Context, w http.ResponseWriter, r *http.Request, p int32, h http.Handler) bool {
	sr, ok := rt.Router.(StandbyReader)
	if !ok {
		return false
	}
	release, err := sr.ReadIndex(ctx, p)
	if err != nil {
		return false
	}
	defer release()
	forwardsStandby.Inc()
	r.Body = http.NoBody
	r.ContentLength = 0
	rt.setServed(w.Header(), hops(r.Header.Get(HeaderForwardedBy)))
	w.Header()[HeaderStandby] = rt.servedByValue()
	h.ServeHTTP(w, r)
	return true
}

// maxForwardBody bounds the body kept for a retry; the services accept far
// less.
const maxForwardBody = 1 << 20

func (rt Routing) unavailable(w http.ResponseWriter, r *http.Request, p int32, err error) {
	if errors.Is(r.Context().Err(), context.Canceled) {
		return
	}
	w.Header().Set("Retry-After", "1")
	httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusServiceUnavailable, "partition-unavailable", "Partition unavailable",
		fmt.Sprintf("no instance serves partition %d yet (%v)", p, err)))
}

// forward proxies r, whose body is body, to owner. It returns the error, having written
// nothing, when the request may be sent again: the owner could not be
// dialed, a read got no answer, or the owner stopped answering after the
// partition moved away from it. Any other outcome is written to w.
func (rt Routing) forward(w http.ResponseWriter, r *http.Request, body []byte, p int32, owner kafkax.Member, epoch int) (retryErr error) {
	target, err := url.Parse(owner.URL)
	if err != nil {
		rt.unavailable(w, r, -1, fmt.Errorf("owner %s has a bad URL %q: %w", owner.ID, owner.URL, err))
		return nil
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	abandoned := make(chan struct{})
	// Most forwards are answered in milliseconds: the owner is watched
	// only once one has taken longer than a watch interval.
	watch := time.AfterFunc(watchEvery, func() {
		rt.watchOwner(ctx, p, owner, target, func() { close(abandoned); cancel() })
	})
	defer watch.Stop()
	proxy := &httputil.ReverseProxy{
		Transport:  httpx.PeerTransport,
		BufferPool: httpx.ProxyBuffers,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = target.Host
			by := rt.Self.ID
			if prev := pr.In.Header.Get(HeaderForwardedBy); prev != "" {
				by = prev + "," + by
			}
			pr.Out.Header.Set(HeaderForwardedBy, by)
			if _, ok := rt.Router.(EpochRouter); ok {
				pr.Out.Header.Set(HeaderEpoch, strconv.Itoa(epoch))
			}
			if rt.Sign != nil {
				rt.Sign(pr.Out, body) // last: it signs the headers above
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			if by := resp.Header.Get(HeaderNotServed); by != "" {
				return fmt.Errorf("%w: %s answered %s", errNotServed, by, resp.Status)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			// Nothing has been written yet. A request that never reached
			// the owner may be sent again, and so may a read that it never
			// answered (the owner died with it in flight), and a write held
			// by an owner that lost the partition and does not answer: if
			// it wakes up, Kafka rejects its append (it is fenced).
			var op *net.OpError
			select {
			case <-abandoned:
				retryErr = fmt.Errorf("owner %s lost the partition and does not answer", owner.ID)
				return
			default:
			}
			if errors.Is(err, errNotServed) {
				// The owner served nothing (HeaderNotServed): route again.
				forwardsNotServed.Inc()
				if r.Context().Err() == nil {
					retryErr = err
					return
				}
			}
			if (errors.As(err, &op) && op.Op == "dial") || isRead(r) {
				if r.Context().Err() == nil {
					retryErr = err
					return
				}
			}
			rt.Log.WarnContext(r.Context(), "forward failed", "owner", owner.ID, "url", owner.URL, "err", err)
			rt.unavailable(w, r, -1, fmt.Errorf("owner %s failed: %w", owner.ID, err))
		},
	}
	proxy.ServeHTTP(w, r.WithContext(ctx))
	return retryErr
}

// errNotServed is the error of a forward whose owner served nothing (see
// HeaderNotServed).
var errNotServed = errors.New("the owner served nothing")

// watchEvery is how often a forward in flight checks that its owner still
// owns the partition, or still answers.
const watchEvery = 500 * time.Millisecond

// watchOwner calls abandon if, while a forward is in flight, the partition
// moves away from owner and owner does not answer its health check (it is
// paused or dead). An owner that still answers keeps the request: it will
// either finish it or be fenced and say so. It checks at once, then every
// watchEvery, until ctx ends.
func (rt Routing) watchOwner(ctx context.Context, p int32, owner kafkax.Member, target *url.URL, abandon func()) {
	tick := time.NewTicker(watchEvery)
	defer tick.Stop()
	health := &http.Client{Timeout: 500 * time.Millisecond}
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
		if ctx.Err() != nil {
			return
		}
		probe, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		now, self, err := rt.Router.Route(probe, p)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil && !self && now.ID == owner.ID {
			continue // still the owner
		}
		resp, herr := health.Get(target.JoinPath("/healthz").String())
		if herr == nil {
			resp.Body.Close()
			continue
		}
		abandon()
		return
	}
}

func isRead(r *http.Request) bool { return r.Method == http.MethodGet || r.Method == http.MethodHead }

// serveAcquired serves r here, holding p (see Acquirer) while it does,
// and reports whether it answered. It does not when the instance has begun
// handing p over (Acquire refuses), nor when a write is refused with
// HeaderNotWritten while ctx allows another try: then nothing was written
// and nothing answered, and the caller routes r again. Such a write's body
// is kept in memory (the services accept small bodies only) so that it
// can be sent again.
func (rt Routing) serveAcquired(ctx context.Context, w http.ResponseWriter, r *http.Request, p int32, epoch, hops int, h http.Handler) bool {
	if acq, ok := rt.Router.(Acquirer); ok {
		release, ok := acq.Acquire(p, epoch)
		if !ok {
			return false
		}
		defer release()
	}
	forwardsLocal.Inc()
	if isRead(r) {
		// A read that lost the partition while it read is routed again
		// (to the new owner, once there is one) while ctx allows.
		return rt.serveHeld(w, r, p, epoch, hops, ctx.Err() == nil, h)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxForwardBody))
	if err != nil {
		rt.setServed(w.Header(), hops)
		// Too large, or unreadable: let h answer what it reads.
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), r.Body))
		h.ServeHTTP(w, r)
		return true
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	b := bufferPool.Get().(*bufferedResponse)
	defer b.release()
	rt.setServed(b.header, hops)
	h.ServeHTTP(b, r)
	if b.header.Get(HeaderNotWritten) != "" {
		b.header.Del(HeaderNotWritten)
		if ctx.Err() == nil {
			forwards.WithLabelValues("rerouted").Inc()
			r.Body = io.NopCloser(bytes.NewReader(body))
			return false
		}
	}
	hdr := w.Header()
	for k, v := range b.header {
		hdr[k] = v
	}
	w.WriteHeader(max(b.status, http.StatusOK))
	_, _ = w.Write(b.body.Bytes())
	return true
}

// serveHeld serves r here, with X-Served-By and X-Profiles-Hops (hops). A
// read is answered only if this instance still serves p (in epoch) once h
// has read (see Holder): h writes into a buffer first, and an answer read
// on a partition lost meanwhile is dropped, as is one that Interrupter cut
// short. With retry, serveHeld then
// writes nothing and returns false, and the caller routes the read again;
// without, it answers 503 partition-unavailable, which the client may
// retry at once. A write goes straight to h, which checks its own
// outcome: an append is fenced by Kafka, and command-svc confirms any
// other answer the same way.
func (rt Routing) serveHeld(w http.ResponseWriter, r *http.Request, p int32, epoch, hops int, retry bool, h http.Handler) (answered bool) {
	served := func() { rt.setServed(w.Header(), hops) }
	holder, ok := rt.Router.(Holder)
	if !ok || !isRead(r) {
		served()
		h.ServeHTTP(w, r)
		return true
	}
	b := bufferPool.Get().(*bufferedResponse)
	defer b.release()
	hr := r
	if in, ok := rt.Router.(Interrupter); ok && (rt.Waits == nil || rt.Waits(r)) {
		ictx, cancel := in.Interrupt(r.Context(), p, epoch)
		defer cancel()
		hr = r.WithContext(ictx)
	}
	h.ServeHTTP(b, hr)
	cut := hr.Context().Err() != nil && r.Context().Err() == nil
	if cut || !holder.Holds(p, epoch) {
		forwardsLost.Inc()
		if retry {
			return false // nothing written: the caller routes it again
		}
		served()
		rt.unavailable(w, r, p, errors.New("this instance stopped serving the partition while it read"))
		return true
	}
	served()
	hdr := w.Header()
	for k, v := range b.header {
		hdr[k] = v
	}
	w.WriteHeader(max(b.status, http.StatusOK))
	_, _ = w.Write(b.body.Bytes())
	return true
}

// setServed sets X-Served-By and X-Profiles-Hops (hops) on h. The values
// are shared by many answers; each has a capacity of one, so that adding
// to one (Header.Add) appends to a copy.
func (rt Routing) setServed(h http.Header, hops int) {
	h[HeaderServedBy] = rt.servedByValue()
	if hops >= 0 && hops < len(hopValues) {
		h[HeaderHops] = hopValues[hops]
	} else {
		h[HeaderHops] = []string{strconv.Itoa(hops)}
	}
}

// servedByValue is the value of X-Served-By, shared (see setServed).
func (rt Routing) servedByValue() []string {
	if rt.servedBy == nil {
		return []string{rt.Self.ID}
	}
	return rt.servedBy
}

// hopValues are the values of X-Profiles-Hops that occur.
var hopValues = [][]string{[]string{"0"}[:1:1], []string{"1"}[:1:1], []string{"2"}[:1:1]}

// Counters of forwards, by outcome.
var (
	forwardsLocal     = forwards.WithLabelValues("local")
	forwardsForwarded = forwards.WithLabelValues("forwarded")
	forwardsLost      = forwards.WithLabelValues("lost")
	forwardsNotServed = forwards.WithLabelValues("not_served")
	forwardsStandby   = forwards.WithLabelValues("standby")
	forwardsToStandby = forwards.WithLabelValues("to_standby")
)

// bufferedResponse holds an answer until it may be sent: the headers the
// handler set (added to those already set on the real ResponseWriter),
// its status and its body. It is pooled, its header map and buffer with
// it.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

var bufferPool = sync.Pool{New: func() any { return &bufferedResponse{header: http.Header{}} }}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	return b.body.Write(p)
}

func (b *bufferedResponse) release() {
	clear(b.header) // the values live on in the ResponseWriter they were copied to
	b.status = 0
	if b.body.Cap() > 64<<10 {
		return // do not keep a large buffer
	}
	b.body.Reset()
	bufferPool.Put(b)
}
