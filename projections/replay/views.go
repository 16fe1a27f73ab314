package replay

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// ViewStatus is what a query-svc instance reports about the rebuild of its
// view (GET /admin/view/rebuild).
type ViewStatus struct {
	Instance string `json:"instance"`
	// State is "idle" (no rebuild since start), "rebuilding" or "done".
	State      string     `json:"state"`
	StartedAt  *time.Time `json:"startedAt,omitempty"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	// Partitions the instance owns, and how many of them are still
	// catching up.
	Partitions int `json:"partitions"`
	Behind     int `json:"behind"`
	// Records read from Kafka since the rebuild started.
	Records int64 `json:"records"`
}

// RebuildViews asks each query-svc instance in turn (base URLs such as
// http://127.0.0.1:8082) to drop its Pebble view and re-read it from the
// current generation's topics, and waits, printing progress, until it
// serves again, before it moves to the next instance: one instance at a
// time, so the others keep answering for their partitions. It returns the
// final status of every instance.
func RebuildViews(ctx context.Context, env Env, urls []string, wait time.Duration) ([]ViewStatus, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	var out []ViewStatus
	for _, base := range urls {
		base = strings.TrimRight(base, "/")
		endpoint := base + "/admin/view/rebuild"
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, nil)
		if err != nil {
			return out, err
		}
		env.authorize(req)
		resp, err := client.Do(req)
		if err != nil {
			return out, fmt.Errorf("start the rebuild of %s: %w", base, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return out, fmt.Errorf("start the rebuild of %s: %s", base, resp.Status)
		}
		start := time.Now()
		last := time.Time{}
		for {
			st, err := viewStatus(ctx, env, client, endpoint)
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

func viewStatus(ctx context.Context, env Env, client *http.Client, endpoint string) (ViewStatus, error) {
	var st ViewStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return st, err
	}
	env.authorize(req)
	resp, err := client.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s: %s", endpoint, resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}
