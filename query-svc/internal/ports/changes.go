package ports

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"profiles/platform/auth"
	"profiles/platform/httpx"
	"profiles/platform/pii"
	"profiles/query-svc/internal/changes"
)

var (
	streamsOpen = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "profiles_query_change_streams_open",
		Help: "Change streams (GET /api/changes) open on this instance.",
	})
	changeEventsSent = promauto.NewCounter(prometheus.CounterOpts{
		Name: "profiles_query_change_events_sent_total",
		Help: "profile and deleted events sent on change streams.",
	})
	changeRecordsPoison = promauto.NewCounter(prometheus.CounterOpts{
		Name: "profiles_query_change_records_poison_total",
		Help: "Snapshot records that a change stream could not decode and skipped.",
	})
)

// Defaults of Changes.
const (
	DefaultHeartbeat    = 15 * time.Second
	DefaultStreamWrite  = 30 * time.Second
	generationCheck     = time.Second
	changesStartTimeout = 10 * time.Second
)

// Changes serves GET /api/changes: the changes of the serving snapshot
// generation's snapshot topic as Server-Sent Events, resumable with
// Last-Event-ID. Any instance answers (it is not routed): each stream
// reads every partition of the topic itself.
//
// Each event's id is the stream position after it (changes.Position): a
// client that reconnects with it, to any instance, continues with the next
// record of every partition, so it misses none and sees none twice. A
// stream ends when the client goes, at the service's shutdown (Stop), when
// the token that opened it expires, and when the serving generation
// changes; a client that then reconnects with
// an id of the old generation gets the new one from its beginning.
type Changes struct {
	Source changes.Source
	// Generation returns the serving snapshot generation, 0 while none
	// serves; Topic returns the snapshot topic of generation n.
	Generation func() int
	Topic      func(n int) string
	// Max is the most streams open at once; beyond it, 503.
	Max int
	// Heartbeat is the interval of keep-alive comments (0: 15s), and
	// WriteTimeout the longest one write to a client may block (0: 30s).
	Heartbeat, WriteTimeout time.Duration
	// Stop ends every stream when it is closed: the service's shutdown,
	// so that the server's graceful shutdown does not wait for streams.
	Stop     <-chan struct{}
	Instance string
	Log      *slog.Logger

	open atomic.Int64
}

// Register adds GET /api/changes to r.
func (h *Changes) Register(r *mux.Router) {
	r.HandleFunc("/api/changes", h.serve).Methods(http.MethodGet)
}

// Open returns the number of streams open now.
func (h *Changes) Open() int64 { return h.open.Load() }

func (h *Changes) serve(w http.ResponseWriter, r *http.Request) {
	gen := h.Generation()
	if gen == 0 {
		w.Header().Set("Retry-After", "1")
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusServiceUnavailable, "not-ready", "Not ready",
			"this instance serves no snapshot generation yet"))
		return
	}
	var last *changes.Position
	id := r.Header.Get("Last-Event-ID")
	if id == "" {
		id = r.URL.Query().Get("lastEventId")
	}
	if id != "" {
		pos, err := changes.Parse(id)
		if err != nil {
			httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusBadRequest, "invalid-last-event-id", "Invalid Last-Event-ID", err.Error()))
			return
		}
		last = &pos
	}
	from := r.URL.Query().Get("from")
	if from != "" && from != "beginning" {
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusBadRequest, "invalid-parameter", "Invalid parameter",
			`from must be "beginning" or absent`))
		return
	}
	if n := h.open.Add(1); h.Max < 1 || n > int64(h.Max) {
		h.open.Add(-1)
		w.Header().Set("Retry-After", "5")
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusServiceUnavailable, "too-many-streams", "Too many streams",
			"this instance has "+strconv.Itoa(h.Max)+" change streams open; try again later or another instance"))
		return
	}
	streamsOpen.Inc()
	defer func() { h.open.Add(-1); streamsOpen.Dec() }()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if p, ok := auth.FromContext(ctx); ok && !p.Expires.IsZero() {
		// A stream lives no longer than the token that opened it: the
		// client reconnects with its Last-Event-ID and a fresh token.
		var cancelAtExpiry context.CancelFunc
		ctx, cancelAtExpiry = context.WithDeadline(ctx, p.Expires)
		defer cancelAtExpiry()
	}
	if h.Stop != nil {
		go func() {
			select {
			case <-h.Stop:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	topic := h.Topic(gen)
	sess, err := h.Source.Open(ctx, topic)
	if err != nil {
		h.unavailable(w, r, topic, err)
		return
	}
	defer sess.Close()
	bctx, bcancel := context.WithTimeout(ctx, changesStartTimeout)
	bounds, err := sess.Bounds(bctx)
	bcancel()
	if err != nil {
		h.unavailable(w, r, topic, err)
		return
	}
	pos, how, err := changes.StartAt(gen, bounds, last, from == "beginning")
	if err != nil {
		httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusBadRequest, "invalid-last-event-id", "Invalid Last-Event-ID", err.Error()))
		return
	}
	h.stream(ctx, w, sess, topic, pos, how)
}

func (h *Changes) unavailable(w http.ResponseWriter, r *http.Request, topic string, err error) {
	if r.Context().Err() != nil {
		return
	}
	h.Log.Warn("cannot start a change stream", "topic", topic, "err", err)
	w.Header().Set("Retry-After", "1")
	httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusServiceUnavailable, "unavailable", "Unavailable",
		"the snapshot topic cannot be read right now"))
}

// batch is records of one partition.
type batch struct {
	p       int32
	records []changes.Record
}

// stream writes the stream from pos until the client goes, Stop closes, the
// generation changes or reading fails.
func (h *Changes) stream(ctx context.Context, w http.ResponseWriter, sess changes.Session, topic string, pos changes.Position, how string) {
	heartbeat, writeTimeout := h.Heartbeat, h.WriteTimeout
	if heartbeat <= 0 {
		heartbeat = DefaultHeartbeat
	}
	if writeTimeout <= 0 {
		writeTimeout = DefaultStreamWrite
	}
	log := h.Log.With("topic", topic, "generation", pos.Generation)

	// The server's WriteTimeout would cut the stream: each write gets its
	// own deadline instead, so only a client that stops reading is cut.
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	send := func(write func() error) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		return write() == nil && rc.Flush() == nil
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no") // nginx and the like: do not buffer
	if h.Instance != "" {
		hdr.Set("X-Served-By", h.Instance)
	}
	w.WriteHeader(http.StatusOK)
	sw := &changes.Writer{W: w}
	ready := changes.JSON(changes.Ready{Generation: pos.Generation, From: how})
	if !send(func() error { return sw.Event(pos.String(), changes.EventReady, ready) }) {
		return
	}
	log.Debug("change stream started", "from", how, "position", pos.String())

	records := make(chan batch)
	rctx, stopRead := context.WithCancel(ctx)
	var wg sync.WaitGroup
	readErr := make(chan error, 1)
	wg.Go(func() {
		readErr <- sess.Read(rctx, maps.Clone(pos.Next), func(ctx context.Context, p int32, recs []changes.Record) error {
			select {
			case records <- batch{p, recs}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	})
	defer wg.Wait()
	defer stopRead()

	beat := time.NewTicker(heartbeat)
	defer beat.Stop()
	genTick := time.NewTicker(generationCheck)
	defer genTick.Stop()
	sent := 0
	defer func() { log.Debug("change stream ended", "events", sent, "position", pos.String()) }()
	for {
		select {
		case <-ctx.Done(): // the client went, or Stop
			return
		case err := <-readErr:
			if ctx.Err() == nil {
				log.Warn("change stream: reading the snapshot topic failed; ending the stream", "err", err)
			}
			return
		case <-genTick.C:
			if n := h.Generation(); n != 0 && n != pos.Generation {
				log.Info("change stream: the snapshot generation changed; ending the stream", "new", n)
				return
			}
		case <-beat.C:
			if !send(func() error { return sw.Comment("keepalive") }) {
				return
			}
		case b := <-records:
			for _, rec := range b.records {
				if errors.Is(rec.Err, pii.ErrKeyUnavailable) {
					// Not poison: end the stream, and the client resumes
					// from its last event id, this record included.
					log.Warn("change stream: a snapshot's data key cannot be read yet; ending the stream", "partition", b.p, "offset", rec.Offset, "err", rec.Err)
					return
				}
				pos.Next[b.p] = rec.Offset + 1
				if rec.Err != nil {
					changeRecordsPoison.Inc()
					log.Warn("change stream: skipping an undecodable snapshot record", "partition", b.p, "offset", rec.Offset, "err", rec.Err)
					continue
				}
				data := changes.JSON(rec.Change)
				if !send(func() error { return sw.Event(pos.String(), rec.Event, data) }) {
					return
				}
				sent++
				changeEventsSent.Inc()
			}
			beat.Reset(heartbeat)
		}
	}
}
