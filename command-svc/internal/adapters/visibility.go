package adapters

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// QueryVisibility waits until query-svc serves a change, by asking it with
// GET /api/profile/{uid}?minVersion=N and, for each touched email,
// GET /api/search?email=E&uid=U&minVersion=N. query-svc holds such a
// request open until its view has that version, and routes it to the owner
// of the uid's or the email's partition, so any instance will do: the
// requests are spread over BaseURLs.
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

	next atomic.Uint64
}

// WaitVisible returns nil once readers see uid at version or later, by uid
// and under every email of emails. A 404 for the uid also counts: the
// profile was deleted at that version or after, and nothing follows a
// delete.
func (v *QueryVisibility) WaitVisible(ctx context.Context, uid string, version int64, emails []string) (err error) {
	began := time.Now()
	defer func() {
		result := "visible"
		if err != nil {
			result = "not_visible"
		}
		visibleSeconds.WithLabelValues(result).Observe(time.Since(began).Seconds())
	}()
	ctx, cancel := context.WithTimeout(ctx, v.Timeout)
	defer cancel()
	ver := strconv.FormatInt(version, 10)
	paths := []string{"/api/profile/" + url.PathEscape(uid) + "?minVersion=" + ver}
	for _, e := range emails {
		paths = append(paths, "/api/search?"+url.Values{"email": {e}, "uid": {uid}, "minVersion": {ver}}.Encode())
	}
	bases := []string{""} // "" lets wait pick one instance
	if v.Every {
		bases = v.BaseURLs
	}
	errc := make(chan error, len(paths)*len(bases))
	for _, path := range paths {
		for _, base := range bases {
			go func() { errc <- v.wait(ctx, base, path) }()
		}
	}
	var first error
	for range len(paths) * len(bases) {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

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
func (v *QueryVisibility) wait(ctx context.Context, base, path string) error {
	pick := base == ""
	for {
		if pick {
			base = v.BaseURLs[v.next.Add(1)%uint64(len(v.BaseURLs))]
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			return err
		}
		if v.Sign != nil {
			v.Sign(req, nil)
		}
		resp, err := v.Client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK, http.StatusNotFound:
				return nil
			case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
				err = fmt.Errorf("query-svc answered %s", resp.Status)
			default:
				return fmt.Errorf("wait for %s: query-svc answered %s", path, resp.Status)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", path, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
