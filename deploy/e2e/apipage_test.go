package e2e

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// needChromium returns Debian's chromium (apt-get install chromium; .ci/run
// installs it), skipping loudly without it, or failing under CI=true.
func needChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true but chromium is not installed (apt-get install chromium)")
	}
	t.Skip("SKIPPED: chromium is not installed (apt-get install chromium); the API page is not checked")
	return ""
}

// startFrontDoorOnly runs the front door binary with no upstream: enough
// for the pages it serves itself (/docs, /openapi.yaml). It returns its
// base URL.
func startFrontDoorOnly(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(binDir, "frontdoor")
	if binDir == "" { // TestMain builds the binaries only with a broker
		bin = filepath.Join(t.TempDir(), "frontdoor")
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/frontdoor")
		cmd.Dir = filepath.Join(repoRoot, "deploy")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build the front door: %v\n%s", err, out)
		}
	}
	port := freePort(t)
	dead := fmt.Sprintf("http://127.0.0.1:%d", freePort(t)) // nothing listens there
	var log bytes.Buffer
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), fmt.Sprintf("HTTP_ADDR=127.0.0.1:%d", port),
		"COMMAND_URL="+dead, "QUERY_URL="+dead, "AUTH_MODE=off", "LOG_FORMAT=json")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("front door log:\n%s", log.String())
		}
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/docs")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the front door did not serve /docs within 30 s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// chromiumRun runs headless chromium on url with args, its own profile
// directory, and a bound of 90 s, and returns its standard output.
func chromiumRun(t *testing.T, exe, url string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	all := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--disable-extensions", "--hide-scrollbars",
		"--user-data-dir=" + t.TempDir(),
		// Virtual time runs the page's scripts, and waits for its fetch of
		// /openapi.yaml, before the DOM is dumped or the shot taken.
		"--virtual-time-budget=20000",
	}, args...)
	cmd := exec.CommandContext(ctx, exe, append(all, url)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// The API page: headless Chromium opens /docs on the front door, the
// vendored Swagger UI fetches /openapi.yaml and renders it, and the
// rendered DOM shows every operation of the document (method, path and
// summary) under its tag. A screenshot goes to docs/api-page.png.
func TestAPIPageRendersEveryOperationInChromium(t *testing.T) {
	exe := needChromium(t)
	base := startFrontDoorOnly(t)

	dom := string(chromiumRun(t, exe, base+"/docs", "--dump-dom"))
	ops := []struct{ method, path, summary, tag string }{
		{"POST", "/api/profile", "Create a profile", "profiles"},
		{"GET", "/api/profile/{uid}", "Get a profile", "profiles"},
		{"PUT", "/api/profile/{uid}", "Change a profile's username and email", "profiles"},
		{"DELETE", "/api/profile/{uid}", "Delete a profile", "profiles"},
		{"GET", "/api/profile/{uid}/history", "Get a profile's history", "history"},
		{"GET", "/api/search", "Find profiles by email", "search"},
		{"GET", "/api/changes", "Stream the changes of profiles (Server-Sent Events)", "changes"},
	}
	// Swagger UI renders an operation as a block with the id
	// operations-<tag>-<operationId>, whose summary line holds the method,
	// the path (data-path) and the summary.
	blocks := regexp.MustCompile(`<div class="opblock opblock-(\w+)[^"]*" id="operations-(\w+)-(\w+)"`).FindAllStringSubmatch(dom, -1)
	if len(blocks) != len(ops) {
		t.Fatalf("the page shows %d operations, want %d; DOM (%d bytes):\n%s", len(blocks), len(ops), len(dom), tail([]byte(dom), 4000))
	}
	for _, op := range ops {
		found := false
		for _, b := range blocks {
			if strings.EqualFold(b[1], op.method) && b[2] == op.tag {
				found = found || strings.Contains(dom, `data-path="`+op.path+`"`)
			}
		}
		// The DOM dump escapes an apostrophe in text only sometimes.
		if !found || (!strings.Contains(dom, op.summary) && !strings.Contains(dom, strings.ReplaceAll(op.summary, "'", "&#39;"))) {
			t.Errorf("%s %s (%q, tag %s) is not on the page", op.method, op.path, op.summary, op.tag)
		}
	}
	for _, tag := range []string{"profiles", "history", "search", "changes"} {
		if !strings.Contains(dom, `id="operations-tag-`+tag+`"`) {
			t.Errorf("tag %s has no section on the page", tag)
		}
	}
	if !strings.Contains(dom, "profiles") || strings.Contains(dom, "Failed to load API definition") {
		t.Fatalf("the page did not load the description:\n%s", tail([]byte(dom), 4000))
	}

	shot := filepath.Join(t.TempDir(), "api-page.png")
	chromiumRun(t, exe, base+"/docs", "--window-size=1280,1500", "--screenshot="+shot)
	b, err := os.ReadFile(shot)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	// Not a blank page: count the distinct colours of a sample of pixels.
	colours := map[uint32]bool{}
	r := img.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y += 7 {
		for x := r.Min.X; x < r.Max.X; x += 7 {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			colours[cr>>8<<16|cg>>8<<8|cb>>8] = true
		}
	}
	if r.Dx() != 1280 || len(colours) < 20 {
		t.Fatalf("screenshot %dx%d with %d colours: blank?", r.Dx(), r.Dy(), len(colours))
	}
	dst := filepath.Join(repoRoot, "docs", "api-page.png")
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("the page shows all %d operations; screenshot (%dx%d, %d bytes) in docs/api-page.png", len(ops), r.Dx(), r.Dy(), len(b))
}
