// Package compose checks docker-compose.yml, which CI cannot start (there
// is no Docker engine here): that it runs every Go service from one image
// with a health check by the service's own binary, orders the start by
// health, gives each binary only settings it takes, the ones `make run`
// gives it (deploy/run.sh, which the end-to-end tests run), and keeps
// each instance's DATA_DIR on a named volume of its own.
package compose

import (
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"
)

var repoRoot = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}()

// image is the one image every Go service runs from.
const image = "profiles:local"

// binaries are the programs of the image, by name: their module and
// package, as deploy/Dockerfile builds them.
var binaries = map[string]struct{ module, pkg string }{
	"command-svc": {"command-svc", "./cmd/command-svc"},
	"query-svc":   {"query-svc", "./cmd/query-svc"},
	"projector":   {"projections", "./cmd/projector"},
	"replay":      {"projections", "./cmd/replay"},
	"replicator":  {"projections", "./cmd/replicator"},
	"frontdoor":   {"deploy", "./cmd/frontdoor"},
}

// The Go services of the file: two instances of each service, as make run
// starts them, and the front door.
var goServices = []string{"command-svc-0", "command-svc-1", "query-svc-0", "query-svc-1", "projector-0", "projector-1", "frontdoor"}

type service struct {
	Image       string            `yaml:"image"`
	Build       any               `yaml:"build"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Environment map[string]string `yaml:"environment"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test     []string `yaml:"test"`
		Interval string   `yaml:"interval"`
		Timeout  string   `yaml:"timeout"`
	} `yaml:"healthcheck"`
	// Volumes are mounts in the short syntax (a string) or the long one.
	Volumes []any `yaml:"volumes"`
}

type composeFile struct {
	Services map[string]service `yaml:"services"`
	// Volumes are the named volumes declared at the top level.
	Volumes map[string]any `yaml:"volumes"`
}

func loadComposeFile(t *testing.T) composeFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return f
}

func loadCompose(t *testing.T) map[string]service {
	t.Helper()
	return loadComposeFile(t).Services
}

// binaryOf is the program a Go service runs: the base name of its
// entrypoint, which must be the service's name without the instance.
func binaryOf(t *testing.T, name string, s service) string {
	t.Helper()
	if len(s.Entrypoint) != 1 || !strings.HasPrefix(s.Entrypoint[0], "/usr/local/bin/") {
		t.Fatalf("%s: entrypoint %q, want [/usr/local/bin/<binary>]", name, s.Entrypoint)
	}
	bin := filepath.Base(s.Entrypoint[0])
	if want := regexp.MustCompile(`-\d+$`).ReplaceAllString(name, ""); bin != want {
		t.Fatalf("%s runs %s, want %s", name, bin, want)
	}
	if _, ok := binaries[bin]; !ok {
		t.Fatalf("%s runs %s, which the image does not hold", name, bin)
	}
	return bin
}

// Every Go service runs from one image, built once from deploy/Dockerfile
// (no per-service build arguments), which builds every binary.
func TestComposeOneImage(t *testing.T) {
	services := loadCompose(t)
	var builds []any
	for _, name := range goServices {
		s, ok := services[name]
		if !ok {
			t.Fatalf("docker-compose.yml has no service %s", name)
		}
		binaryOf(t, name, s)
		if s.Image != image {
			t.Errorf("%s: image %q, want %q", name, s.Image, image)
		}
		builds = append(builds, s.Build)
	}
	for name := range services {
		if name != "kafka" && !slices.Contains(goServices, name) {
			t.Errorf("service %s is neither Kafka nor a Go service this test knows", name)
		}
	}
	want := map[string]any{"context": ".", "dockerfile": "deploy/Dockerfile"}
	for i, b := range builds {
		if !reflect.DeepEqual(b, want) {
			t.Errorf("%s: build %v, want %v for every Go service", goServices[i], b, want)
		}
	}
	dockerfile, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for bin, b := range binaries {
		if pkg := "./" + b.module + strings.TrimPrefix(b.pkg, "."); !strings.Contains(string(dockerfile), pkg) {
			t.Errorf("deploy/Dockerfile does not build %s (%s)", bin, pkg)
		}
	}
	if strings.Contains(string(dockerfile), "ARG MODULE") || strings.Contains(string(dockerfile), "ARG CMD") {
		t.Error("deploy/Dockerfile still builds one program per image")
	}
}

// Every Go service's health check runs its own binary with -healthcheck,
// and every start waits for what it needs to be healthy: the Kafka
// services for Kafka, the front door for command-svc and query-svc.
func TestComposeHealth(t *testing.T) {
	services := loadCompose(t)
	if services["kafka"].Healthcheck == nil {
		t.Fatal("kafka has no health check")
	}
	for _, name := range goServices {
		s := services[name]
		bin := binaryOf(t, name, s)
		h := s.Healthcheck
		if h == nil {
			t.Errorf("%s has no health check", name)
			continue
		}
		if want := []string{"CMD", "/usr/local/bin/" + bin, "-healthcheck"}; !slices.Equal(h.Test, want) {
			t.Errorf("%s: health check %q, want %q", name, h.Test, want)
		}
		if h.Interval == "" || h.Timeout == "" {
			t.Errorf("%s: health check without interval or timeout", name)
		}
		var needs []string
		switch bin {
		case "frontdoor":
			needs = []string{"command-svc-0", "command-svc-1", "query-svc-0", "query-svc-1"}
		default:
			needs = []string{"kafka"}
		}
		for _, dep := range needs {
			if c := s.DependsOn[dep].Condition; c != "service_healthy" {
				t.Errorf("%s: depends_on %s with condition %q, want service_healthy", name, dep, c)
			}
		}
		for dep, d := range s.DependsOn {
			if d.Condition != "service_healthy" {
				t.Errorf("%s: depends_on %s with condition %q, want service_healthy", name, dep, d.Condition)
			}
			if services[dep].Healthcheck == nil {
				t.Errorf("%s waits for %s to be healthy, which has no health check", name, dep)
			}
		}
	}
}

var (
	buildOnce sync.Once
	accepted  map[string]map[string]bool // binary -> variables it takes
	buildErr  error
)

// acceptedEnv builds the binaries the file runs and reads the variables
// each takes from its -h (config names each flag's variable there as
// "(env NAME)").
func acceptedEnv(t *testing.T) map[string]map[string]bool {
	t.Helper()
	buildOnce.Do(func() {
		dir := t.TempDir()
		accepted = map[string]map[string]bool{}
		re := regexp.MustCompile(`\(env ([A-Z0-9_]+)\)`)
		for bin, b := range binaries {
			if !slices.ContainsFunc(goServices, func(s string) bool { return strings.HasPrefix(s, bin) }) {
				continue
			}
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, bin), b.pkg)
			cmd.Dir = filepath.Join(repoRoot, b.module)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = &buildError{bin, err, string(out)}
				return
			}
			out, _ := exec.Command(filepath.Join(dir, bin), "-h").CombinedOutput()
			accepted[bin] = map[string]bool{}
			for _, m := range re.FindAllStringSubmatch(string(out), -1) {
				accepted[bin][m[1]] = true
			}
			if len(accepted[bin]) == 0 {
				buildErr = &buildError{bin, nil, "-h names no variable:\n" + string(out)}
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return accepted
}

type buildError struct {
	bin string
	err error
	out string
}

func (e *buildError) Error() string { return "build " + e.bin + ": " + e.out }

// runEnv is what `make run` gives each process (deploy/run.sh with
// DRY_RUN=1 prints each process's own variables; the ones it exports to
// all are its unconditional export lines), by process name.
func runEnv(t *testing.T) map[string]map[string]bool {
	t.Helper()
	script := filepath.Join(repoRoot, "deploy", "run.sh")
	cmd := exec.Command("bash", script)
	cmd.Env = append(os.Environ(), "DRY_RUN=1", "RUN_DATA="+t.TempDir(), "AUTH_MODE=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("DRY_RUN=1 deploy/run.sh: %v\n%s", err, out)
	}
	src, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	var global []string
	for _, m := range regexp.MustCompile(`(?m)^export ([A-Z0-9_]+)=`).FindAllStringSubmatch(string(src), -1) {
		global = append(global, m[1])
	}
	// Without PII_KEK or PII_KEK_FILE, run.sh exports a generated key file.
	global = append(global, "PII_KEK_FILE")
	env := map[string]map[string]bool{}
	line := regexp.MustCompile(`^([a-z-]+(?:-\d+)?): (.*)$`)
	for _, l := range strings.Split(string(out), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil || m[1] == "ready when" {
			continue
		}
		vars := map[string]bool{}
		for _, g := range global {
			vars[g] = true
		}
		for _, w := range strings.Fields(m[2]) {
			if k, _, ok := strings.Cut(w, "="); ok && regexp.MustCompile(`^[A-Z0-9_]+$`).MatchString(k) {
				vars[k] = true
			}
		}
		env[m[1]] = vars
	}
	if len(env) == 0 {
		t.Fatalf("DRY_RUN=1 deploy/run.sh printed no process:\n%s", out)
	}
	return env
}

// Every variable of a Go service is one its binary takes, and they are
// the ones `make run` gives the same process, except that the file has no
// generated key-encryption key: PII_KEK_DEV stands in for PII_KEK_FILE.
func TestComposeEnvironment(t *testing.T) {
	services := loadCompose(t)
	takes := acceptedEnv(t)
	run := runEnv(t)
	for _, name := range goServices {
		s := services[name]
		bin := binaryOf(t, name, s)
		for k := range s.Environment {
			if !takes[bin][k] {
				t.Errorf("%s: %s is not a setting of %s", name, k, bin)
			}
		}
		want, ok := run[name]
		if !ok {
			t.Errorf("make run starts no process %s", name)
			continue
		}
		for k := range want {
			if !takes[bin][k] {
				continue // exported to every process; this one ignores it
			}
			if k == "PII_KEK_FILE" {
				if s.Environment["PII_KEK_DEV"] != "true" {
					t.Errorf("%s: make run gives it a key file (PII_KEK_FILE); the file must set PII_KEK_DEV=true instead", name)
				}
				continue
			}
			if _, ok := s.Environment[k]; !ok {
				t.Errorf("%s: make run sets %s, the file does not", name, k)
			}
		}
		for k := range s.Environment {
			if !want[k] && k != "PII_KEK_DEV" {
				t.Errorf("%s: the file sets %s, make run does not", name, k)
			}
		}
		if strings.HasSuffix(name, "-0") || strings.HasSuffix(name, "-1") {
			if s.Environment["INSTANCE_ID"] != name {
				t.Errorf("%s: INSTANCE_ID %q, want the service's name", name, s.Environment["INSTANCE_ID"])
			}
		}
	}
}

// statefulBinaries keep their state in DATA_DIR (Pebble stores: caches of
// Kafka, rebuilt by a refold or restore when lost).
var statefulBinaries = []string{"command-svc", "query-svc", "projector"}

// mountTarget is one mount of a service: its source (a volume name, or a
// host path for a bind mount) and its path in the container.
type mountTarget struct {
	kind, source, target string
}

// mounts reads a service's volumes in either syntax.
func mounts(t *testing.T, name string, s service) []mountTarget {
	t.Helper()
	var out []mountTarget
	for _, v := range s.Volumes {
		switch v := v.(type) {
		case string:
			parts := strings.Split(v, ":")
			if len(parts) < 2 {
				t.Errorf("%s: volume %q has no target (an anonymous volume)", name, v)
				continue
			}
			kind := "volume"
			if strings.HasPrefix(parts[0], "/") || strings.HasPrefix(parts[0], ".") || strings.HasPrefix(parts[0], "~") {
				kind = "bind"
			}
			out = append(out, mountTarget{kind, parts[0], parts[1]})
		case map[string]any:
			kind, _ := v["type"].(string)
			source, _ := v["source"].(string)
			target, _ := v["target"].(string)
			out = append(out, mountTarget{kind, source, target})
		default:
			t.Errorf("%s: volume %v is neither a string nor a mapping", name, v)
		}
	}
	return out
}

// Every service with a DATA_DIR (and every instance of a stateful
// service has one) keeps it on a named volume declared at the top level,
// one per instance, so that recreating a container keeps its stores and
// no two instances share one. Every declared volume is mounted.
func TestComposeDataVolumes(t *testing.T) {
	f := loadComposeFile(t)
	owner := map[string]string{} // volume -> the service whose DATA_DIR it holds
	used := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(f.Services)) {
		s := f.Services[name]
		ms := mounts(t, name, s)
		for _, m := range ms {
			if m.kind == "volume" {
				used[m.source] = true
			}
		}
		dir, ok := s.Environment["DATA_DIR"]
		if !ok {
			if slices.Contains(goServices, name) && slices.Contains(statefulBinaries, binaryOf(t, name, s)) {
				t.Errorf("%s has no DATA_DIR", name)
			}
			continue
		}
		if !filepath.IsAbs(dir) {
			t.Errorf("%s: DATA_DIR %q is not an absolute path", name, dir)
			continue
		}
		// The mount that holds DATA_DIR: the deepest one at or above it.
		var holder *mountTarget
		for i, m := range ms {
			if rel, err := filepath.Rel(m.target, dir); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
				if holder == nil || len(m.target) > len(holder.target) {
					holder = &ms[i]
				}
			}
		}
		switch {
		case holder == nil:
			t.Errorf("%s: DATA_DIR %s is in the container's filesystem, lost when the container is recreated; mount a named volume on it", name, dir)
		case holder.kind != "volume" || holder.source == "":
			t.Errorf("%s: DATA_DIR %s is on a %s mount of %q, want a named volume", name, dir, holder.kind, holder.source)
		default:
			if _, ok := f.Volumes[holder.source]; !ok {
				t.Errorf("%s: DATA_DIR %s is on volume %s, which the top-level volumes do not declare", name, dir, holder.source)
			}
			if other, ok := owner[holder.source]; ok {
				t.Errorf("%s and %s keep their DATA_DIR on the same volume %s", other, name, holder.source)
			}
			owner[holder.source] = name
		}
	}
	for v := range f.Volumes {
		if !used[v] {
			t.Errorf("volume %s is declared but no service mounts it", v)
		}
	}
}
