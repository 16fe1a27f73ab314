package httpx

import "net/http"

// HeaderAlive, on a request between instances, asks the server to answer
// 102 Processing at once, before the handler runs: a caller that holds a
// request open for long (a read that waits for a version) can then tell a
// server that is waiting from one it cannot reach, whose silence looks the
// same until the caller's own deadline.
const HeaderAlive = "X-Profiles-Alive"

// AnswerAlive wraps h: a request that carries HeaderAlive gets 102
// Processing before h runs. It must wrap everything that records the
// status (access logs, metrics, tracing), so that they see only the final
// answer. HTTP/1.1 clients skip 1xx answers; Go's http.Client reports
// them through httptrace's Got1xxResponse.
func AnswerAlive(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(HeaderAlive) != "" {
			w.WriteHeader(http.StatusProcessing)
		}
		h.ServeHTTP(w, r)
	})
}
