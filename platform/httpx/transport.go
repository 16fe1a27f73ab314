package httpx

import (
	"net/http"

	"profiles/platform/tracing"
)

// PeerTransport carries the requests that instances send each other:
// forwards to a partition's owner, internal calls, read-your-writes waits.
// It is http.DefaultTransport with room for many idle connections per
// host, so that concurrent calls to a peer reuse connections instead of
// opening new ones (the default keeps two idle per host), and it carries
// the trace of the request it is sent for, with a client span of its own
// (tracing.Transport). It is safe for concurrent use, like every
// http.Transport.
var PeerTransport http.RoundTripper = func() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = 1024, 256
	return tracing.Transport(t)
}()
