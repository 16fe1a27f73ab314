// Package frontdoor is the single entry point of the API on :8080. It only
// routes: reads (GET, HEAD) go to query-svc and writes to command-svc, so a
// client sees one REST API while each side scales on its own.
package frontdoor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"profiles/platform/httpx"
)

// New returns the front door handler for the two upstream base URLs.
func New(commandURL, queryURL *url.URL, log *slog.Logger) http.Handler {
	write, read := proxy(commandURL, log), proxy(queryURL, log)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			read.ServeHTTP(w, r)
		default:
			write.ServeHTTP(w, r)
		}
	})
}

func proxy(target *url.URL, log *slog.Logger) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				return // the client went away
			}
			log.Warn("upstream unreachable", "upstream", target.String(), "err", err)
			w.Header().Set("Retry-After", "1")
			httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusBadGateway, "upstream-unavailable", "",
				"the service behind this route is unreachable"))
		},
	}
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
