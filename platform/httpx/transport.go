package httpx

import (
	"net/http"
	"net/http/httputil"
	"sync"

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

// ProxyBuffers lends httputil.ReverseProxy the buffers through which it
// copies a proxied answer's body (set it as ReverseProxy.BufferPool).
// Without it, every proxied answer allocates a buffer of its own (32 KiB),
// for answers that are most often a few hundred bytes. It is safe for
// concurrent use.
var ProxyBuffers httputil.BufferPool = proxyBuffers{}

// proxyBufferSize is the size of ReverseProxy's own buffers.
const proxyBufferSize = 32 << 10

var proxyBufferPool = sync.Pool{New: func() any { b := make([]byte, proxyBufferSize); return &b }}

type proxyBuffers struct{}

func (proxyBuffers) Get() []byte { return *proxyBufferPool.Get().(*[]byte) }

func (proxyBuffers) Put(b []byte) {
	if cap(b) == proxyBufferSize {
		b = b[:proxyBufferSize]
		proxyBufferPool.Put(&b)
	}
}
