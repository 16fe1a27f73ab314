package httpx

import "net/http"

// PeerTransport carries the requests that instances send each other:
// forwards to a partition's owner, internal calls, read-your-writes waits.
// It is http.DefaultTransport with room for many idle connections per
// host: the default keeps two, so under concurrent load most of those
// requests opened a new connection (make bench: forwarded GETs, POSTs).
// It is safe for concurrent use, like every http.Transport.
var PeerTransport http.RoundTripper = func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = 1024, 256
	return t
}()
