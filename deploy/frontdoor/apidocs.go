package frontdoor

import (
	"bytes"
	"compress/gzip"
	"embed"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"

	"profiles/platform/httpx"
)

// The API page: Swagger UI (the swagger-ui-dist npm package, vendored in
// apidocs/swagger-ui-dist with its license; see
// apidocs/swagger-ui-dist/VENDORED.md) rendering /openapi.yaml. Nothing is
// fetched from anywhere but the front door at run time.
//
//go:embed apidocs/index.html apidocs/init.js apidocs/swagger-ui-dist
var apiDocs embed.FS

// DocsPagePolicy is the Content-Security-Policy of the API page and its
// files: scripts, styles and the description from the front door only;
// Swagger UI sets inline styles and uses data: images; "Try it out" calls
// the API on the same origin.
const DocsPagePolicy = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
	"img-src 'self' data:; font-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// docsFiles maps the names served under /docs/ to their embedded paths.
var docsFiles = map[string]string{
	"init.js":                          "apidocs/init.js",
	"swagger-ui-bundle.js":             "apidocs/swagger-ui-dist/swagger-ui-bundle.js",
	"swagger-ui.css":                   "apidocs/swagger-ui-dist/swagger-ui.css",
	"favicon-32x32.png":                "apidocs/swagger-ui-dist/favicon-32x32.png",
	"LICENSE":                          "apidocs/swagger-ui-dist/LICENSE",
	"NOTICE":                           "apidocs/swagger-ui-dist/NOTICE",
	"swagger-ui-bundle.js.LICENSE.txt": "apidocs/swagger-ui-dist/swagger-ui-bundle.js.LICENSE.txt",
}

// DocsHandler serves the API page at /docs and its files at /docs/NAME
// (gzipped for clients that accept it). The page names its files and the
// description relative to itself, so it also works behind a proxy that
// mounts the front door under a prefix.
func DocsHandler() http.Handler {
	var zipped sync.Map // name → []byte
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpx.SetPagePolicy(r, DocsPagePolicy)
		name := strings.TrimPrefix(r.URL.Path, "/docs")
		if name == "/" {
			// Relative, unlike http.Redirect's, so that a prefix stays.
			w.Header().Set("Location", "../docs")
			w.WriteHeader(http.StatusMovedPermanently)
			return
		}
		file, cache := "apidocs/index.html", "no-cache"
		if name != "" {
			name = strings.TrimPrefix(name, "/")
			if file = docsFiles[name]; file == "" {
				httpx.NotFoundHandler(w, r)
				return
			}
			// The files change only with the binary; a reload after an
			// upgrade revalidates within the hour.
			cache = "public, max-age=3600"
		}
		body, err := fs.ReadFile(apiDocs, file)
		if err != nil {
			httpx.WriteProblem(w, r, httpx.NewProblem(http.StatusInternalServerError, "", "", err.Error()))
			return
		}
		h := w.Header()
		ctype := mime.TypeByExtension(path.Ext(file))
		if ctype == "" || path.Ext(file) == ".txt" || !strings.Contains(path.Base(file), ".") {
			ctype = "text/plain; charset=utf-8"
		}
		h.Set("Content-Type", ctype)
		h.Set("Cache-Control", cache)
		h.Add("Vary", "Accept-Encoding")
		if len(body) > 1024 && acceptsGzip(r) {
			z, ok := zipped.Load(file)
			if !ok {
				var buf bytes.Buffer
				zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
				_, _ = zw.Write(body)
				_ = zw.Close()
				z, _ = zipped.LoadOrStore(file, buf.Bytes())
			}
			body = z.([]byte)
			h.Set("Content-Encoding", "gzip")
		}
		if r.Method == http.MethodHead {
			h.Set("Content-Length", strconv.Itoa(len(body)))
			return
		}
		_, _ = w.Write(body)
	})
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.ReplaceAll(strings.TrimSpace(q), " ", "") != "q=0" {
			return true
		}
	}
	return false
}
