package observe

import (
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestBuildInfo(t *testing.T) {
	b := BuildInfo()
	if b.GoVersion != runtime.Version() {
		t.Fatalf("go version %q, want %q", b.GoVersion, runtime.Version())
	}
	if b.Version == "" {
		t.Fatal("empty version")
	}
	old := version
	version = "v9.8.7"
	defer func() { version = old }()
	if b := BuildInfo(); b.Version != "v9.8.7" {
		t.Fatalf("ldflags version ignored: %q", b.Version)
	}
	s := Build{Version: "v1", Revision: "abc", Modified: true, GoVersion: "go1.26"}.String("x")
	if s != "x v1 (revision abc+modified, go1.26)" {
		t.Fatalf("String = %q", s)
	}
}

func TestRegisterBuildInfo(t *testing.T) {
	RegisterBuildInfo("svc")
	RegisterBuildInfo("other") // once per process: ignored
	b := BuildInfo()
	if got := testutil.ToFloat64(buildInfo.WithLabelValues("svc", b.Version, b.Revision, b.GoVersion)); got != 1 {
		t.Fatalf("profiles_build_info = %v, want 1", got)
	}
	if n := testutil.CollectAndCount(buildInfo); n != 1 {
		t.Fatalf("%d build_info series, want 1", n)
	}
	if !strings.HasPrefix(b.String("svc"), "svc ") {
		t.Fatal(b.String("svc"))
	}
}
