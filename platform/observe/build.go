package observe

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// version is the release version, set at build time with
//
//	go build -ldflags "-X profiles/platform/observe.version=v1.2.3"
//
// (deploy/Dockerfile passes VERSION). Without it the module version Go
// records is used, "(devel)" for a build from a work tree.
var version string

// Build is what a binary knows of its own build.
type Build struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"` // the VCS commit, "" if unknown
	Time      string `json:"time"`     // the commit's time, "" if unknown
	Modified  bool   `json:"modified"` // the work tree had changes
	GoVersion string `json:"goVersion"`
}

// BuildInfo returns this binary's build: the ldflags version, else the
// one in debug.ReadBuildInfo, and the VCS settings Go recorded.
func BuildInfo() Build {
	b := Build{Version: version, GoVersion: runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if ok {
		if b.Version == "" {
			b.Version = info.Main.Version
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Revision = s.Value
			case "vcs.time":
				b.Time = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if b.Version == "" {
		b.Version = "(devel)"
	}
	return b
}

// String is the line -version prints: name, version, revision, Go.
func (b Build) String(name string) string {
	rev := b.Revision
	if rev == "" {
		rev = "unknown"
	}
	if b.Modified {
		rev += "+modified"
	}
	return fmt.Sprintf("%s %s (revision %s, %s)", name, b.Version, rev, b.GoVersion)
}

var (
	buildInfo = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "profiles_build_info",
		Help: "Always 1; its labels name the binary, its version, VCS revision and Go version.",
	}, []string{"service", "version", "revision", "goversion"})
	buildOnce sync.Once
)

// RegisterBuildInfo exposes profiles_build_info for service (once per
// process).
func RegisterBuildInfo(service string) {
	buildOnce.Do(func() {
		b := BuildInfo()
		buildInfo.WithLabelValues(service, b.Version, b.Revision, b.GoVersion).Set(1)
	})
}
