package httpx

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/mux"
)

func TestParseAccessLog(t *testing.T) {
	for _, bad := range []string{"sometimes", "sample=0", "sample=x", "sample="} {
		if _, err := ParseAccessLog(bad); err == nil {
			t.Errorf("ParseAccessLog(%q) accepted", bad)
		}
	}
	for _, good := range []string{"", "on", "OFF", "sample=10"} {
		if _, err := ParseAccessLog(good); err != nil {
			t.Errorf("ParseAccessLog(%q): %v", good, err)
		}
	}
}

// accessLines serves n requests to /api/profile/{uid}?email=... through
// MiddlewareWith(access), with status, and returns the log lines.
func accessLines(t *testing.T, setting string, n, status int) []map[string]any {
	t.Helper()
	a, err := ParseAccessLog(setting)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil)).With("instance", "i-1")
	r := mux.NewRouter()
	r.Use(MiddlewareWith(log, a))
	r.HandleFunc("/api/profile/{uid}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(status) })
	for range n {
		req := httptest.NewRequest(http.MethodGet, "/api/profile/0c9a-secret-uid?email=someone@mail.com", nil)
		req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		r.ServeHTTP(httptest.NewRecorder(), req)
	}
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		if strings.Contains(line, "secret-uid") || strings.Contains(line, "someone@mail.com") {
			t.Fatalf("the access log shows the path or query: %s", line)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func TestAccessLog(t *testing.T) {
	lines := accessLines(t, "on", 3, http.StatusOK)
	if len(lines) != 3 {
		t.Fatalf("on: %d lines for 3 requests", len(lines))
	}
	l := lines[0]
	if l["level"] != "INFO" || l["route"] != "/api/profile/{uid}" || l["status"] != float64(200) || l["method"] != "GET" ||
		l["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736" || l["instance"] != "i-1" || l["duration_ms"] == nil {
		t.Fatalf("access log line: %v", l)
	}
	if n := len(accessLines(t, "off", 5, http.StatusOK)); n != 0 {
		t.Fatalf("off: %d lines", n)
	}
	if n := len(accessLines(t, "sample=4", 12, http.StatusOK)); n != 3 {
		t.Fatalf("sample=4: %d lines for 12 requests, want 3", n)
	}
	// Server errors are logged whatever the setting, at warn.
	errs := accessLines(t, "off", 2, http.StatusInternalServerError)
	if len(errs) != 2 || errs[0]["level"] != "WARN" {
		t.Fatalf("500s with the access log off: %v", errs)
	}
}
