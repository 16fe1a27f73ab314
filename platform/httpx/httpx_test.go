package httpx

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type body struct {
	Name string `json:"name"`
}

func TestDecodeJSON(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		body        string
		wantStatus  int // 0 = decodes
	}{
		{"valid object", "application/json", `{"name":"bob"}`, 0},
		{"charset parameter is fine", "application/json; charset=utf-8", `{"name":"bob"}`, 0},
		{"wrong content type", "text/plain", `{"name":"bob"}`, http.StatusUnsupportedMediaType},
		{"missing content type", "", `{"name":"bob"}`, http.StatusUnsupportedMediaType},
		{"syntax error", "application/json", `{"name":`, http.StatusBadRequest},
		{"unknown field", "application/json", `{"name":"bob","admin":true}`, http.StatusBadRequest},
		{"wrong field type", "application/json", `{"name":7}`, http.StatusBadRequest},
		{"empty body", "application/json", ``, http.StatusBadRequest},
		{"trailing data", "application/json", `{"name":"bob"} {}`, http.StatusBadRequest},
		{"null is not an object", "application/json", ` null `, http.StatusBadRequest},
		{"array is not an object", "application/json", `[]`, http.StatusBadRequest},
		{"oversized body", "application/json", `{"name":"` + strings.Repeat("x", 200) + `"}`, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tt.body))
			if tt.contentType != "" {
				r.Header.Set("Content-Type", tt.contentType)
			}
			var dst body
			p := DecodeJSON(httptest.NewRecorder(), r, 100, &dst)
			switch {
			case tt.wantStatus == 0 && p != nil:
				t.Fatalf("unexpected problem %+v", p)
			case tt.wantStatus != 0 && (p == nil || p.Status != tt.wantStatus):
				t.Fatalf("problem = %+v, want status %d", p, tt.wantStatus)
			}
		})
	}
}

func TestWriteProblem(t *testing.T) {
	w := httptest.NewRecorder()
	WriteProblem(w, httptest.NewRequest(http.MethodGet, "/api/x", nil), NewProblem(http.StatusConflict, "email-taken", "", "taken"))
	if w.Code != http.StatusConflict || w.Header().Get("Content-Type") != ProblemContentType {
		t.Fatalf("status %d, content type %q", w.Code, w.Header().Get("Content-Type"))
	}
	var p Problem
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	if p.Type != "urn:profiles:problem:email-taken" || p.Title != "Conflict" || p.Instance != "/api/x" || p.Status != 409 {
		t.Fatalf("problem %+v", p)
	}
}

func TestHealthReadiness(t *testing.T) {
	var h Health
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", h.Healthz)
	mux.HandleFunc("/readyz", h.Readyz)
	ready := false
	h.Check("view", func() error {
		if !ready {
			return errString("catching up")
		}
		return nil
	})
	get := func(path string) int {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		return w.Code
	}
	if get("/healthz") != 200 || get("/readyz") != 503 {
		t.Fatal("want healthy and not ready")
	}
	ready = true
	if get("/readyz") != 200 {
		t.Fatal("want ready")
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// ProxyBuffers lends buffers of ReverseProxy's own size, and keeps only
// those: a buffer of another size put back is dropped, never lent out.
func TestProxyBuffersLendTheirOwnSize(t *testing.T) {
	b := ProxyBuffers.Get()
	if len(b) != 32<<10 {
		t.Fatalf("lent %d bytes, want 32 KiB", len(b))
	}
	ProxyBuffers.Put(b[:10]) // ReverseProxy puts back what it got; a shorter slice of it is still ours
	ProxyBuffers.Put(make([]byte, 100))
	for range 100 {
		if got := ProxyBuffers.Get(); len(got) != 32<<10 {
			t.Fatalf("lent %d bytes after a foreign buffer was put back, want 32 KiB", len(got))
		}
	}
}
