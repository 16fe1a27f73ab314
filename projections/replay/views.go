package replay

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"profiles/platform/peer"
)

// RebuildViews asks each query-svc instance in turn (base URLs such as
// http://127.0.0.1:8082) to drop its Pebble view and re-read it from the
// current generation's topics, and waits, printing progress, until it
// serves again, before it moves to the next instance: one instance at a
// time, so the others keep answering for their partitions. It returns the
// final status of every instance.
func RebuildViews(ctx context.Context, env Env, urls []string, wait time.Duration) ([]peer.ViewStatus, error) {
	client := peer.Client{HTTP: &http.Client{Timeout: 10 * time.Second}, Sign: func(r *http.Request, _ []byte) { env.authorize(r) }}
	var out []peer.ViewStatus
	for _, base := range urls {
		base = strings.TrimRight(base, "/")
		if err := client.StartRebuild(ctx, base); err != nil {
			return out, fmt.Errorf("start the rebuild of %s: %w", base, err)
		}
		start := time.Now()
		last := time.Time{}
		for {
			st, err := client.ViewStatus(ctx, base)
			if err != nil {
				return out, err
			}
			if st.State == "done" {
				took := time.Since(start)
				fmt.Fprintf(env.Out, "replay: view of %s (%s) rebuilt: %d records from Kafka in %s (%.0f records/s), %d partitions\n",
					st.Instance, base, st.Records, took.Round(time.Millisecond), float64(st.Records)/took.Seconds(), st.Partitions)
				out = append(out, st)
				break
			}
			if time.Since(start) > wait {
				return out, fmt.Errorf("the view of %s is not rebuilt after %s: %+v", base, wait, st)
			}
			if time.Since(last) >= env.every() {
				fmt.Fprintf(env.Out, "replay: rebuilding the view of %s: %d records read, %d of %d partitions caught up, %.0f records/s\n",
					base, st.Records, st.Partitions-st.Behind, st.Partitions, float64(st.Records)/time.Since(start).Seconds())
				last = time.Now()
			}
			select {
			case <-ctx.Done():
				return out, ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return out, nil
}

// authorize adds the admin token, if any, to a request to query-svc.
func (e Env) authorize(req *http.Request) {
	if e.Token != "" {
		req.Header.Set("Authorization", "Bearer "+e.Token)
	}
}
