package httpx

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// fuzzBody has fields of the kinds a request body holds.
type fuzzBody struct {
	Name   string            `json:"name"`
	Count  int               `json:"count"`
	Admin  bool              `json:"admin"`
	Tags   []string          `json:"tags"`
	Nested *struct{ A int }  `json:"nested"`
	Labels map[string]string `json:"labels"`
}

// FuzzDecodeJSON checks DecodeJSON's contract on any body, Content-Type and
// size limit: it never panics; it rejects only with a 400, 413 or 415
// problem; 413 only for a body over the limit; and what it accepts is at
// most maxBytes long, exactly one JSON object, and decodes as a lenient
// json.Unmarshal decodes it. Run it longer with
//
//	cd platform && go test -run '^$' -fuzz '^FuzzDecodeJSON$' -fuzztime 5m ./httpx
func FuzzDecodeJSON(f *testing.F) {
	for _, b := range []string{
		`{"name":"bob"}`, ` {"name":"bob","count":-1,"admin":true,"tags":["a"],"nested":{"A":1},"labels":{"k":"v"}} `,
		`{"NAME":"bob"}`, `{"name":"a","name":"b"}`, `{"name":"bob","extra":1}`, `{"count":1.5}`, `{"count":1e400}`,
		`{"name":"\ud800"}`, "{\"name\":\"\xff\"}", `{"nested":null}`, `{}`, `null`, ` null `, `[]`, `"x"`, `1`, `true`,
		``, `   `, `{`, `{"name":"bob"} {}`, `{"name":"bob"}x`, `{"name":"bob"}` + strings.Repeat(" ", 200),
		`{"name":"` + strings.Repeat("x", 200) + `"}`,
	} {
		f.Add([]byte(b), "application/json", uint16(100))
	}
	f.Add([]byte(`{"name":"bob"}`), "application/json; charset=utf-8", uint16(0))
	f.Add([]byte(`{"name":"bob"}`), "text/plain", uint16(100))
	f.Add([]byte(`{"name":"bob"}`), "application/json;", uint16(100))
	f.Fuzz(func(t *testing.T, body []byte, contentType string, limit uint16) {
		maxBytes := int64(limit)
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		var dst fuzzBody
		p := DecodeJSON(httptest.NewRecorder(), r, maxBytes, &dst)
		if maxBytes <= 0 {
			maxBytes = DefaultMaxBody
		}
		if p != nil {
			switch p.Status {
			case http.StatusBadRequest, http.StatusUnsupportedMediaType:
			case http.StatusRequestEntityTooLarge:
				if int64(len(body)) <= maxBytes {
					t.Fatalf("413 for %d bytes, within the limit of %d", len(body), maxBytes)
				}
			default:
				t.Fatalf("problem with status %d: %+v", p.Status, p)
			}
			if p.Type == "" || p.Title == "" {
				t.Fatalf("incomplete problem %+v", p)
			}
			return
		}
		if int64(len(body)) > maxBytes {
			t.Fatalf("accepted %d bytes, over the limit of %d", len(body), maxBytes)
		}
		if trimmed := bytes.TrimSpace(body); !json.Valid(body) || len(trimmed) == 0 || trimmed[0] != '{' {
			t.Fatalf("accepted a body that is not one JSON object: %q", body)
		}
		var lenient fuzzBody
		if err := json.Unmarshal(body, &lenient); err != nil || !reflect.DeepEqual(lenient, dst) {
			t.Fatalf("decoded %+v, but json.Unmarshal gives %+v, %v", dst, lenient, err)
		}
	})
}
