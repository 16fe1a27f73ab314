package frontdoor

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"profiles/platform/httpx"
)

func TestDocsServesThePageAndItsVendoredFiles(t *testing.T) {
	h := httpx.SecurityHeaders(DocsHandler())
	get := func(path string, header map[string]string) *http.Response {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, path, nil)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Result()
	}
	read := func(r *http.Response) string {
		t.Helper()
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	page := get("/docs", nil)
	body := read(page)
	if page.StatusCode != 200 || !strings.HasPrefix(page.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(body, `src="docs/swagger-ui-bundle.js"`) || !strings.Contains(body, `src="docs/init.js"`) {
		t.Fatalf("/docs: %d %s\n%s", page.StatusCode, page.Header, body)
	}
	if got := page.Header.Get("Content-Security-Policy"); got != DocsPagePolicy {
		t.Fatalf("/docs CSP %q", got)
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, "http://") || strings.Contains(body, "https://") {
		t.Fatalf("the page has an inline script or loads from elsewhere:\n%s", body)
	}

	// The bundle is the vendored file, byte for byte, and gzipped on request.
	want, err := os.ReadFile("apidocs/swagger-ui-dist/swagger-ui-bundle.js")
	if err != nil {
		t.Fatal(err)
	}
	js := get("/docs/swagger-ui-bundle.js", nil)
	if got := read(js); js.StatusCode != 200 || got != string(want) || !strings.HasPrefix(js.Header.Get("Content-Type"), "text/javascript") {
		t.Fatalf("bundle: %d %s, %d bytes of %d", js.StatusCode, js.Header, len(got), len(want))
	}
	if cc := js.Header.Get("Cache-Control"); cc != "public, max-age=3600" {
		t.Fatalf("bundle Cache-Control %q", cc)
	}
	gz := get("/docs/swagger-ui-bundle.js", map[string]string{"Accept-Encoding": "br, gzip"})
	if gz.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("no gzip: %s", gz.Header)
	}
	zr, err := gzip.NewReader(gz.Body)
	if err != nil {
		t.Fatal(err)
	}
	unzipped, _ := io.ReadAll(zr)
	if !bytes.Equal(unzipped, want) {
		t.Fatal("gzipped bundle differs from the vendored file")
	}
	if lic := get("/docs/LICENSE", nil); lic.StatusCode != 200 || !strings.Contains(read(lic), "Apache License") {
		t.Fatal("LICENSE not served")
	}
	for _, path := range []string{"/docs/nope.js", "/docs/../openapi.yaml", "/docs/swagger-ui-dist/package.json"} {
		if r := get(path, nil); r.StatusCode != http.StatusNotFound {
			t.Fatalf("%s: %d", path, r.StatusCode)
		}
	}
	if r := get("/docs/", nil); r.StatusCode != http.StatusMovedPermanently || r.Header.Get("Location") != "../docs" {
		t.Fatalf("/docs/: %d %s", r.StatusCode, r.Header.Get("Location"))
	}
}
