package e2e

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The curl commands of docs/api-changes.md work as written: the page's
// shell blocks that call http://localhost:8080 are run (with the system's
// front door instead, and curl's --max-time) against a running system.
// The live one prints the ready event and then a change made while it
// runs; the from=beginning one prints the profile created before it.
func TestAPIChangesDocCurlCommandsWork(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("SKIPPED: curl is not installed")
	}
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "api-changes.md"))
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(doc), -1) {
		if strings.Contains(m[1], "http://localhost:8080") {
			cmds = append(cmds, strings.TrimSpace(m[1]))
		}
	}
	if len(cmds) != 2 || !strings.Contains(cmds[1], "from=beginning") {
		t.Fatalf("docs/api-changes.md: want two curl commands against localhost:8080, the second with from=beginning; found %q", cmds)
	}
	s := StartSystem(t, Options{})
	run := func(cmd string) *exec.Cmd {
		cmd = strings.ReplaceAll(cmd, "http://localhost:8080", s.URL)
		cmd = strings.Replace(cmd, "curl -N", "curl -sS --max-time 12 -N", 1)
		c := exec.Command("bash", "-c", cmd)
		c.Stdout, c.Stderr = new(bytes.Buffer), new(bytes.Buffer)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	// curl ends with exit code 28 at --max-time: the stream never ends.
	output := func(c *exec.Cmd) string {
		t.Helper()
		err := c.Wait()
		if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 28) {
			t.Fatalf("%s: %v\n%s", c.Args, err, c.Stderr)
		}
		return c.Stdout.(*bytes.Buffer).String()
	}

	r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "ada", "email": "ada.doc@mail.com"}, nil)
	if r.Status != http.StatusCreated {
		t.Fatalf("POST = %d %s", r.Status, r.Body)
	}
	var ada profile
	r.JSON(t, &ada)

	live := run(cmds[0])
	time.Sleep(3 * time.Second) // the stream is open and at the end
	if r := s.Do(http.MethodPut, "/api/profile/"+ada.UID, map[string]string{"username": "ada", "email": "ada.doc2@mail.com"}, nil); r.Status != http.StatusOK {
		t.Fatalf("PUT = %d %s", r.Status, r.Body)
	}
	beginning := run(cmds[1])

	out := output(live)
	t.Logf("live stream:\n%s", out)
	// Each event is "id:", "event:", "data:" lines and a blank line.
	if !regexp.MustCompile(`^id: g1:[0-9=,]+\nevent: ready\ndata: \{"generation":1,"from":"end"\}\n\n`).MatchString(out) ||
		!regexp.MustCompile(`\nid: g1:[0-9=,]+\nevent: profile\ndata: \{"uid":"`+ada.UID+`","version":2,.*"email":"ada.doc2@mail.com"`).MatchString(out) {
		t.Fatal("the live stream did not print ready, then the change made while it ran")
	}
	if strings.Contains(out, `"version":1,`) {
		t.Fatal("the live stream printed the change made before it started")
	}
	out = output(beginning)
	t.Logf("from the beginning:\n%s", out)
	if !regexp.MustCompile(`^id: g1:[0-9=,]+\nevent: ready\ndata: \{"generation":1,"from":"beginning"\}\n\n`).MatchString(out) ||
		!strings.Contains(out, `"uid":"`+ada.UID+`","version":2`) {
		t.Fatal("the stream from the beginning did not print ready and the profile's current state")
	}
}
