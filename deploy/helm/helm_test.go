// Package helm holds the Helm chart of profiles (profiles/); its tests
// lint and render it with helm (PROFILES_HELM, as `make test` installs it
// into .cache/bin, or helm on the PATH).
package helm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func helm(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PROFILES_HELM"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := filepath.Abs("../../.cache/bin/helm"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("helm is not installed (make .cache/bin/helm); CI must lint the chart")
	}
	t.Skip("SKIPPED: helm is not installed (make .cache/bin/helm): the chart is NOT linted")
	return ""
}

// The values a test installs with: the secrets the chart requires.
var secrets = []string{"--set", "secrets.piiKek=MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=", "--set", "secrets.internalSecret=test-internal-secret"}

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(helm(t), args...).CombinedOutput()
	return string(out), err
}

func TestLint(t *testing.T) {
	if out, err := run(t, append([]string{"lint", "--strict", "profiles", "--kube-version", kubeVersion}, secrets...)...); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
}

// The rendered chart has what a platform team needs, wired as the
// services expect.
func TestTemplate(t *testing.T) {
	out, err := run(t, append([]string{"template", "rel", "profiles", "--namespace", "ns", "--kube-version", kubeVersion,
		"--set", "observability.serviceMonitor.enabled=true", "--set", "frontdoor.ingress.enabled=true"}, secrets...)...)
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	for _, want := range []string{
		"kind: StatefulSet\nmetadata:\n  name: rel-profiles-command-svc",
		"kind: StatefulSet\nmetadata:\n  name: rel-profiles-query-svc",
		"kind: StatefulSet\nmetadata:\n  name: rel-profiles-projector",
		"kind: Deployment\nmetadata:\n  name: rel-profiles-frontdoor",
		"kind: PodDisruptionBudget", "kind: ServiceMonitor", "kind: Ingress", "kind: Secret",
		"clusterIP: None",
		`value: "$(POD_NAME)"`, // INSTANCE_ID
		`value: "http://$(POD_NAME).rel-profiles-query-svc-headless.ns.svc:8082"`, // ADVERTISE_URL
		// The front door and command-svc know every query-svc instance.
		`value: "http://rel-profiles-query-svc-0.rel-profiles-query-svc-headless.ns.svc:8082,http://rel-profiles-query-svc-1.rel-profiles-query-svc-headless.ns.svc:8082"`,
		"path: /readyz", "path: /healthz",
		"name: GOMEMLIMIT\n              value: \"1228MiB\"", // 80% of query-svc's 1536Mi
		"terminationGracePeriodSeconds: 42",                  // 5s + 2s + 15s + 10s + 10s
		"volumeClaimTemplates:",
		"secretKeyRef: {name: rel-profiles-secrets, key: PII_KEK}",
		// One image (deploy/Dockerfile) for all; each container runs its binary.
		`command: ["/usr/local/bin/command-svc"]`, `command: ["/usr/local/bin/query-svc"]`,
		`command: ["/usr/local/bin/projector"]`, `command: ["/usr/local/bin/frontdoor"]`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("rendered chart lacks %q", want)
		}
	}
	if n := strings.Count(out, `image: "ghcr.io/example/profiles/profiles:0.1.0"`); n != 4 {
		t.Errorf("%d containers run the one image, want 4", n)
	}
	if t.Failed() {
		t.Log(out)
	}
}

// observability.tracing.endpoint switches tracing on in every workload
// (the three StatefulSets and the front door); without it no OTEL_*
// variable is set, and tracing is off.
func TestTracingEnv(t *testing.T) {
	off, err := run(t, append([]string{"template", "rel", "profiles", "--kube-version", kubeVersion}, secrets...)...)
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, off)
	}
	if strings.Contains(off, "OTEL_") {
		t.Error("the default values set an OTEL_* variable")
	}
	on, err := run(t, append([]string{"template", "rel", "profiles", "--kube-version", kubeVersion,
		"--set", "observability.tracing.endpoint=http://otel-collector.observability.svc:4318",
		"--set", "observability.tracing.sampler=parentbased_traceidratio", "--set", "observability.tracing.samplerArg=0.1"}, secrets...)...)
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, on)
	}
	for want, n := range map[string]int{
		"name: OTEL_EXPORTER_OTLP_ENDPOINT\n              value: \"http://otel-collector.observability.svc:4318\"": 4,
		"name: OTEL_RESOURCE_ATTRIBUTES\n              value: \"service.instance.id=$(POD_NAME)\"":                 4,
		"name: OTEL_TRACES_SAMPLER\n              value: \"parentbased_traceidratio\"":                             4,
		"name: OTEL_TRACES_SAMPLER_ARG\n              value: \"0.1\"":                                              4,
	} {
		if got := strings.Count(on, want); got != n {
			t.Errorf("rendered chart has %q %d times; want %d (every workload)", want, got, n)
		}
	}
	if t.Failed() {
		t.Log(on)
	}
	if out, err := run(t, append([]string{"template", "rel", "profiles", "--kube-version", kubeVersion,
		"--set", "observability.tracing.endpoint=collector:4318"}, secrets...)...); err == nil || !strings.Contains(out, "endpoint") {
		t.Errorf("an endpoint without its scheme was not refused: %v\n%.400s", err, out)
	}
}

// A Kubernetes version the chart supports (helm built with go install
// assumes v1.20).
const kubeVersion = "1.30.0"

// values.schema.json and the chart's own checks refuse bad values, each
// for its own reason.
func TestValuesRefused(t *testing.T) {
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{"--set", "kafka.securityProtocol=SASL_SOMETHING"}, "securityProtocol"},
		{[]string{"--set", "querySvc.replicas=0"}, "replicas"},
		{[]string{"--set", "drain.drainGrace=5 seconds"}, "drainGrace"},
		{[]string{"--set", "observability.accessLog=sometimes"}, "accessLog"},
		{[]string{"--set", "commandSvc.resources.limits.memory=1G"}, "memory"},
		{[]string{"--set", "unknownKey=1"}, "unknownKey"},
		{nil, "set secrets.existingSecret, or both"}, // no secrets at all
	} {
		args := append([]string{"template", "rel", "profiles", "--kube-version", kubeVersion}, tc.set...)
		if tc.set != nil {
			args = append(args, secrets...)
		}
		out, err := run(t, args...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("helm template %v: %v, want an error about %q:\n%.400s", tc.set, err, tc.want, out)
		}
	}
	// The defaults with the secrets render.
	if out, err := run(t, append([]string{"template", "rel", "profiles", "--kube-version", kubeVersion}, secrets...)...); err != nil {
		t.Fatalf("the default values: %v\n%s", err, out)
	}
}
