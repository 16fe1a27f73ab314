package helm

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// replicatorValues runs a replicator of each sink, the main cluster over
// SSL with a private CA and a client certificate, and the mirror's target
// over SASL_SSL with SCRAM and a client certificate of its own.
const replicatorValues = `
kafka:
  securityProtocol: SSL
  tls:
    caSecret: kafka-ca
    clientCert: {secret: profiles-client-tls}
observability:
  serviceMonitor: {enabled: true}
replicator:
  enabled: true
  extraEnv: [{name: EXTRA_ALL, value: "1"}]
  extraVolumes: [{name: all-vol, emptyDir: {}}]
  extraVolumeMounts: [{name: all-vol, mountPath: /all}]
  sinks:
    - name: mirror
      sink: kafka
      target:
        brokers: "mirror-0:9093,mirror-1:9093"
        mirrorEvents: true
        securityProtocol: SASL_SSL
        sasl: {mechanism: SCRAM-SHA-512, username: mirror, passwordSecret: mirror-user}
        tls:
          caSecret: mirror-ca
          caKey: ca.crt
          clientCert: {secret: mirror-client, certKey: user.crt, keyKey: user.key}
      checkpointTopic: dr-checkpoints
      transactionalId: profiles-mirror-dr
    - name: pg
      sink: postgres
      port: 9090
      resources:
        requests: {cpu: 50m, memory: 128Mi}
        limits: {memory: 1Gi}
      postgres: {urlSecret: replicator-pg, urlKey: url}
      extraEnv: [{name: EXTRA_PG, value: "2"}]
      extraVolumes: [{name: pg-vol, secret: {secretName: pg-client-cert}}]
      extraVolumeMounts: [{name: pg-vol, mountPath: /pg, readOnly: true}]
    - name: clear
      sink: clear
      clear: {topic: profiles-clear-v2, maxCompactionLag: 30m, deleteRetention: 168h}
`

// envOf is the container's environment: the plain values, and the
// valueFrom of the others.
func envOf(c container) (map[string]string, map[string]any) {
	env, from := map[string]string{}, map[string]any{}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			from[e.Name] = e.ValueFrom
		} else {
			env[e.Name] = e.Value
		}
	}
	return env, from
}

// secretRef is the Secret and key of a valueFrom.secretKeyRef.
func secretRef(v any) secretFile {
	m, _ := v.(map[string]any)
	ref, _ := m["secretKeyRef"].(map[string]any)
	name, _ := ref["name"].(string)
	key, _ := ref["key"].(string)
	return secretFile{name, key}
}

// Each sink renders into its own Deployment of one pod, replaced with
// Recreate, with the settings of its sink, its secrets from Secrets (the
// Kafka ones as read-only files), probes, a metrics port and a
// ServiceMonitor; the services' own checks accept the Kafka settings of
// both clusters.
func TestReplicatorSinks(t *testing.T) {
	f := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(f, []byte(replicatorValues), 0o600); err != nil {
		t.Fatal(err)
	}
	byBinary, out, err := render(t, "-f", f)
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	if lint, err := run(t, append([]string{"lint", "--strict", "profiles", "--kube-version", kubeVersion, "-f", f}, secrets...)...); err != nil {
		t.Errorf("helm lint: %v\n%s", err, lint)
	}
	ws := byBinary["replicator"]
	var names []string
	for _, w := range ws {
		names = append(names, w.Kind+" "+w.Metadata.Name)
	}
	if want := []string{"Deployment rel-profiles-replicator-mirror", "Deployment rel-profiles-replicator-pg", "Deployment rel-profiles-replicator-clear"}; !slices.Equal(names, want) {
		t.Fatalf("replicator workloads %v, want %v", names, want)
	}
	// The Kafka security of the profiles' cluster, for every sink.
	mainKafka := map[string]string{"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_TLS_CA_FILE": "", "KAFKA_TLS_CERT_FILE": "", "KAFKA_TLS_KEY_FILE": ""}
	mainFiles := map[string]secretFile{
		"KAFKA_TLS_CA_FILE":   {"kafka-ca", "ca.pem"},
		"KAFKA_TLS_CERT_FILE": {"profiles-client-tls", "tls.crt"}, "KAFKA_TLS_KEY_FILE": {"profiles-client-tls", "tls.key"},
	}
	kek := secretFile{"rel-profiles-secrets", "PII_KEK"}
	for i, tc := range []struct {
		sink, port string
		env        map[string]string     // exactly these of the sinks' variables
		from       map[string]secretFile // exactly these from Secrets
		extra      []string              // extraEnv, extraVolumes and extraVolumeMounts names
		memLimit   string
	}{
		{
			"kafka", "8084",
			map[string]string{
				"TARGET_BROKERS": "mirror-0:9093,mirror-1:9093", "MIRROR_EVENTS": "true",
				"CHECKPOINT_TOPIC": "dr-checkpoints", "TRANSACTIONAL_ID": "profiles-mirror-dr",
			},
			nil, []string{"EXTRA_ALL", "all-vol"}, "512Mi",
		},
		{
			"postgres", "9090", map[string]string{},
			map[string]secretFile{"PII_KEK": kek, "POSTGRES_URL": {"replicator-pg", "url"}},
			[]string{"EXTRA_ALL", "all-vol", "EXTRA_PG", "pg-vol"}, "1Gi",
		},
		{
			"clear", "8084",
			map[string]string{"CLEAR_TOPIC": "profiles-clear-v2", "CLEAR_MAX_COMPACTION_LAG": "30m", "CLEAR_DELETE_RETENTION": "168h"},
			map[string]secretFile{"PII_KEK": kek}, []string{"EXTRA_ALL", "all-vol"}, "512Mi",
		},
	} {
		w := ws[i]
		t.Run(tc.sink, func(t *testing.T) {
			if w.Spec.Replicas == nil || *w.Spec.Replicas != 1 || w.Spec.Strategy.Type != "Recreate" {
				t.Errorf("replicas %v, strategy %q; want 1 and Recreate", w.Spec.Replicas, w.Spec.Strategy.Type)
			}
			c := containerOf(t, w, "replicator")
			env, from := envOf(c)
			if env["SINK"] != tc.sink || env["HTTP_ADDR"] != ":"+tc.port || env["KAFKA_BROKERS"] == "" || env["INSTANCE_ID"] != "$(POD_NAME)" {
				t.Errorf("SINK=%q HTTP_ADDR=%q KAFKA_BROKERS=%q INSTANCE_ID=%q", env["SINK"], env["HTTP_ADDR"], env["KAFKA_BROKERS"], env["INSTANCE_ID"])
			}
			// The sinks' settings: those of this sink, and no other's.
			for _, k := range []string{"TARGET_BROKERS", "MIRROR_EVENTS", "CHECKPOINT_TOPIC", "TRANSACTIONAL_ID", "CLEAR_TOPIC", "CLEAR_MAX_COMPACTION_LAG", "CLEAR_DELETE_RETENTION", "RESET_POSITIONS"} {
				if got, ok := env[k]; ok != (tc.env[k] != "") || got != tc.env[k] {
					t.Errorf("%s=%q (set: %v), want %q", k, got, ok, tc.env[k])
				}
			}
			for k, v := range from {
				if k == "POD_NAME" {
					continue
				}
				if want, ok := tc.from[k]; !ok {
					t.Errorf("%s from %v, which the %s sink does not take", k, v, tc.sink)
				} else if got := secretRef(v); got != want {
					t.Errorf("%s from Secret %q key %q, want %q key %q", k, got.secret, got.key, want.secret, want.key)
				}
			}
			for k := range tc.from {
				if _, ok := from[k]; !ok {
					t.Errorf("no %s", k)
				}
			}
			// Nor the API's settings: the replicator serves no API.
			for _, k := range []string{"INTERNAL_SECRET", "AUTH_MODE", "SESSION_TIMEOUT", "ADVERTISE_URL", "DATA_DIR"} {
				if _, ok := env[k]; ok {
					t.Errorf("%s is set; the replicator does not take it", k)
				}
				if _, ok := from[k]; ok {
					t.Errorf("%s is set; the replicator does not take it", k)
				}
			}
			checkKafkaOf(t, w, "replicator", mainKafka, mainFiles)
			// The target cluster's: TARGET_KAFKA_*, for the kafka sink only.
			target, targetFiles := prefixedKafkaEnv(t, w, "replicator", "TARGET_KAFKA_")
			if tc.sink != "kafka" {
				if len(target) != 0 {
					t.Errorf("the %s sink gets the target's settings %v", tc.sink, target)
				}
			} else {
				want := map[string]string{
					"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "mirror",
					"KAFKA_SASL_PASSWORD_FILE": "", "KAFKA_TLS_CA_FILE": "", "KAFKA_TLS_CERT_FILE": "", "KAFKA_TLS_KEY_FILE": "",
				}
				if len(target) != len(want) {
					t.Errorf("target settings %v, want %v", target, want)
				}
				for k, v := range want {
					if got, ok := target[k]; !ok || (!strings.HasSuffix(k, "_FILE") && got != v) {
						t.Errorf("TARGET_%s=%q (set: %v), want %q", k, got, ok, v)
					}
				}
				for k, f := range map[string]secretFile{
					"KAFKA_SASL_PASSWORD_FILE": {"mirror-user", "password"}, "KAFKA_TLS_CA_FILE": {"mirror-ca", "ca.crt"},
					"KAFKA_TLS_CERT_FILE": {"mirror-client", "user.crt"}, "KAFKA_TLS_KEY_FILE": {"mirror-client", "user.key"},
				} {
					if targetFiles[k] != f {
						t.Errorf("TARGET_%s from %v, want %v", k, targetFiles[k], f)
					}
				}
				if err := accepted(target); err != nil {
					t.Errorf("the replicator refuses the target's settings: %v", err)
				}
			}
			// What the chart does not model, from replicator.* and the sink's own.
			var got []string
			for _, e := range c.Env {
				if strings.HasPrefix(e.Name, "EXTRA_") {
					got = append(got, e.Name)
				}
			}
			for _, v := range w.Spec.Template.Spec.Volumes {
				if strings.HasSuffix(v.Name, "-vol") {
					got = append(got, v.Name)
					if !slices.ContainsFunc(c.VolumeMounts, func(m mount) bool { return m.Name == v.Name }) {
						t.Errorf("volume %s is not mounted", v.Name)
					}
				}
			}
			slices.Sort(got)
			want := slices.Clone(tc.extra)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("extra env and volumes %v, want %v", got, want)
			}
			// Probes, the port and the resources.
			if fmt.Sprint(c.ReadinessProbe["httpGet"]) != "map[path:/readyz port:http]" || fmt.Sprint(c.LivenessProbe["httpGet"]) != "map[path:/healthz port:http]" {
				t.Errorf("probes: readiness %v, liveness %v", c.ReadinessProbe, c.LivenessProbe)
			}
			if fmt.Sprint(c.Ports) != "[map[containerPort:"+tc.port+" name:http]]" {
				t.Errorf("ports %v", c.Ports)
			}
			if limits, _ := c.Resources["limits"].(map[string]any); limits["memory"] != tc.memLimit {
				t.Errorf("resources %v, want the memory limit %s", c.Resources, tc.memLimit)
			}
		})
	}
	for _, want := range []string{
		"kind: Service\nmetadata:\n  name: rel-profiles-replicator-mirror",
		"kind: Service\nmetadata:\n  name: rel-profiles-replicator-pg",
		"kind: Service\nmetadata:\n  name: rel-profiles-replicator-clear",
		"replacement: profiles-replicator", // the ServiceMonitor's job
	} {
		if !strings.Contains(out, want) {
			t.Errorf("rendered chart lacks %q", want)
		}
	}
}

// Without replicator.enabled there is no replicator, whatever sinks says.
func TestReplicatorOff(t *testing.T) {
	byBinary, out, err := render(t, "--set", "replicator.sinks[0].name=pg", "--set", "replicator.sinks[0].sink=postgres", "--set", "replicator.sinks[0].postgres.urlSecret=pg")
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	if len(byBinary["replicator"]) != 0 || strings.Contains(out, "replicator") {
		t.Errorf("the chart runs a replicator that is not enabled:\n%s", out)
	}
}

// The schema and the chart refuse replicators that could not run, or
// would get in each other's way.
func TestReplicatorRefused(t *testing.T) {
	on := []string{"replicator.enabled=true"}
	pg := append(slices.Clone(on), "replicator.sinks[0].name=pg", "replicator.sinks[0].sink=postgres", "replicator.sinks[0].postgres.urlSecret=pg")
	mirror := append(slices.Clone(on), "replicator.sinks[0].name=mirror", "replicator.sinks[0].sink=kafka", "replicator.sinks[0].target.brokers=t:9092")
	for _, tc := range []struct {
		name string
		set  []string
		want string
	}{
		{"enabled without sinks", on, "/replicator/sinks': minItems"},
		{"an unknown sink", append(slices.Clone(on), "replicator.sinks[0].name=s3", "replicator.sinks[0].sink=s3"), "/replicator/sinks/0/sink'"},
		{"a sink without a name", append(slices.Clone(on), "replicator.sinks[0].sink=clear"), "missing property 'name'"},
		{"a name that is not a DNS label", append(slices.Clone(on), "replicator.sinks[0].name=My_Sink", "replicator.sinks[0].sink=clear"), "/replicator/sinks/0/name'"},
		{"a name too long for a Service", append(slices.Clone(on), "replicator.sinks[0].name=a-very-long-replicator-sink-name-indeedx", "replicator.sinks[0].sink=clear"), "longer than 63 characters"},
		{"kafka without a target", append(slices.Clone(on), "replicator.sinks[0].name=mirror", "replicator.sinks[0].sink=kafka"), "missing property 'target'"},
		{"kafka without target brokers", append(slices.Clone(mirror), "replicator.sinks[0].target.brokers="), "/replicator/sinks/0/target/brokers'"},
		{"postgres without a URL Secret", append(slices.Clone(on), "replicator.sinks[0].name=pg", "replicator.sinks[0].sink=postgres"), "missing property 'postgres'"},
		{"postgres with an empty URL Secret", append(slices.Clone(pg), "replicator.sinks[0].postgres.urlSecret="), "/replicator/sinks/0/postgres/urlSecret'"},
		{"a URL in the values", append(slices.Clone(pg), "replicator.sinks[0].postgres.url=postgres://u:p@db/x"), "additional properties 'url'"},
		{"postgres with a target", append(slices.Clone(pg), "replicator.sinks[0].target.brokers=t:9092"), "/replicator/sinks/0/target'"},
		{"postgres with a transactional id", append(slices.Clone(pg), "replicator.sinks[0].transactionalId=x"), "/replicator/sinks/0/transactionalId'"},
		{"kafka with a URL Secret", append(slices.Clone(mirror), "replicator.sinks[0].postgres.urlSecret=pg"), "/replicator/sinks/0/postgres'"},
		{"kafka with clear settings", append(slices.Clone(mirror), "replicator.sinks[0].clear.topic=x"), "/replicator/sinks/0/clear'"},
		{"clear with a target", append(slices.Clone(on), "replicator.sinks[0].name=c", "replicator.sinks[0].sink=clear", "replicator.sinks[0].target.brokers=t:9092"), "/replicator/sinks/0/target'"},
		{"a compaction lag that is no duration", append(slices.Clone(on), "replicator.sinks[0].name=c", "replicator.sinks[0].sink=clear", "replicator.sinks[0].clear.maxCompactionLag=1 hour"), "/replicator/sinks/0/clear/maxCompactionLag'"},
		{"a target's PLAIN over SASL_PLAINTEXT",
			append(slices.Clone(mirror), "replicator.sinks[0].target.securityProtocol=SASL_PLAINTEXT", "replicator.sinks[0].target.sasl.mechanism=PLAIN", "replicator.sinks[0].target.sasl.username=u", "replicator.sinks[0].target.sasl.passwordSecret=p"),
			"/replicator/sinks/0/target/securityProtocol': value must be 'SASL_SSL'"},
		{"a target's SASL without a mechanism", append(slices.Clone(mirror), "replicator.sinks[0].target.securityProtocol=SASL_SSL"), "/replicator/sinks/0/target'"},
		{"a target's client certificate without TLS", append(slices.Clone(mirror), "replicator.sinks[0].target.tls.clientCert.secret=c"), "/replicator/sinks/0/target/tls/clientCert/secret': value must be ''"},
		{"two sinks of one name",
			append(slices.Clone(pg), "replicator.sinks[1].name=pg", "replicator.sinks[1].sink=clear"), `two sinks are named "pg"`},
		{"two clear sinks with the default transactional id",
			append(slices.Clone(on), "replicator.sinks[0].name=a", "replicator.sinks[0].sink=clear", "replicator.sinks[1].name=b", "replicator.sinks[1].sink=clear", "replicator.sinks[1].clear.topic=other"), "would fence each other"},
		{"two mirrors to one cluster with one transactional id",
			append(slices.Clone(mirror), "replicator.sinks[1].name=m2", "replicator.sinks[1].sink=kafka", "replicator.sinks[1].target.brokers=t:9092"), "would fence each other"},
		{"two clear sinks with one checkpoint topic",
			append(slices.Clone(on), "replicator.sinks[0].name=a", "replicator.sinks[0].sink=clear", "replicator.sinks[1].name=b", "replicator.sinks[1].sink=clear",
				"replicator.sinks[1].transactionalId=b", "replicator.sinks[1].clear.topic=other"), "where they would mix"},
		{"two mirrors to one cluster with one checkpoint topic",
			append(slices.Clone(mirror), "replicator.sinks[1].name=m2", "replicator.sinks[1].sink=kafka", "replicator.sinks[1].target.brokers=t:9092",
				"replicator.sinks[1].transactionalId=m2", "replicator.sinks[1].checkpointTopic=profile-mirror-checkpoints"), "where they would mix"},
		{"a mount without a path", append(slices.Clone(pg), "replicator.extraVolumeMounts[0].name=x"), "missing property 'mountPath'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var args []string
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			_, out, err := render(t, args...)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("helm template %v: %v, want an error about %q:\n%.1200s", tc.set, err, tc.want, out)
			}
		})
	}
	// Two mirrors to different clusters, or with transactional ids and
	// checkpoint topics of their own, and a clear sink beside them, are
	// fine.
	ok := append(slices.Clone(mirror),
		"replicator.sinks[1].name=m2", "replicator.sinks[1].sink=kafka", "replicator.sinks[1].target.brokers=other:9092",
		"replicator.sinks[2].name=m3", "replicator.sinks[2].sink=kafka", "replicator.sinks[2].target.brokers=t:9092",
		"replicator.sinks[2].transactionalId=m3", "replicator.sinks[2].checkpointTopic=m3-checkpoints",
		"replicator.sinks[3].name=c", "replicator.sinks[3].sink=clear")
	var args []string
	for _, s := range ok {
		args = append(args, "--set", s)
	}
	if byBinary, out, err := render(t, args...); err != nil {
		t.Errorf("helm template: %v\n%s", err, out)
	} else if n := len(byBinary["replicator"]); n != 4 {
		t.Errorf("%d replicators, want 4", n)
	}
}

// extraVolumes and extraVolumeMounts mount what the chart does not model
// on every component, and extraEnv adds variables.
func TestExtraVolumes(t *testing.T) {
	var args []string
	for _, c := range []string{"commandSvc", "querySvc", "projector", "frontdoor"} {
		args = append(args,
			"--set", c+".extraEnv[0].name=EXTRA_"+strings.ToUpper(c), "--set", c+".extraEnv[0].value=/extra/file",
			"--set", c+".extraVolumes[0].name=extra-"+strings.ToLower(c), "--set", c+".extraVolumes[0].secret.secretName=s-"+strings.ToLower(c),
			"--set", c+".extraVolumeMounts[0].name=extra-"+strings.ToLower(c), "--set", c+".extraVolumeMounts[0].mountPath=/extra",
			"--set", c+".extraVolumeMounts[0].readOnly=true")
	}
	// With Kafka's own volumes beside them.
	args = append(args, "--set", "kafka.securityProtocol=SSL", "--set", "kafka.tls.caSecret=kafka-ca")
	byBinary, out, err := render(t, args...)
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	for bin, c := range map[string]string{"command-svc": "commandSvc", "query-svc": "querySvc", "projector": "projector", "frontdoor": "frontdoor"} {
		w := byBinary[bin][0]
		ctr := containerOf(t, w, bin)
		vol := "extra-" + strings.ToLower(c)
		i := slices.IndexFunc(w.Spec.Template.Spec.Volumes, func(v volume) bool { return v.Name == vol })
		if i < 0 || w.Spec.Template.Spec.Volumes[i].Secret == nil || w.Spec.Template.Spec.Volumes[i].Secret.SecretName != "s-"+strings.ToLower(c) {
			t.Errorf("%s: no volume %s of Secret s-%s: %+v", bin, vol, strings.ToLower(c), w.Spec.Template.Spec.Volumes)
		}
		if !slices.Contains(ctr.VolumeMounts, mount{Name: vol, MountPath: "/extra", ReadOnly: true}) {
			t.Errorf("%s: %s is not mounted read-only at /extra: %+v", bin, vol, ctr.VolumeMounts)
		}
		if env, _ := envOf(ctr); env["EXTRA_"+strings.ToUpper(c)] != "/extra/file" {
			t.Errorf("%s: no EXTRA_%s", bin, strings.ToUpper(c))
		}
		if bin != "frontdoor" && !slices.ContainsFunc(ctr.VolumeMounts, func(m mount) bool { return m.Name == "kafka-tls" }) {
			t.Errorf("%s: the extra volume replaced the CA's: %+v", bin, ctr.VolumeMounts)
		}
	}
}

// The replicator example of docs/operations.md's "Deploy" section renders,
// and the replicator accepts both clusters' settings.
func TestOperationsReplicatorExample(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(doc), "\n## Deploy\n")
	section, _, _ = strings.Cut(section, "\n## ")
	var example string
	for _, b := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(section, -1) {
		if strings.Contains(b[1], "replicator:") {
			example = b[1]
		}
	}
	if example == "" {
		t.Fatal("docs/operations.md's Deploy section has no replicator example")
	}
	// The example is indented in its list item.
	var lines []string
	for _, l := range strings.Split(example, "\n") {
		lines = append(lines, strings.TrimPrefix(l, "  "))
	}
	f := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(f, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	byBinary, out, err := render(t, "-f", f)
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	if n := len(byBinary["replicator"]); n != 2 {
		t.Fatalf("%d replicators, want 2", n)
	}
	for _, w := range byBinary["replicator"] {
		env, _ := kafkaEnv(t, w, "replicator")
		target, _ := prefixedKafkaEnv(t, w, "replicator", "TARGET_KAFKA_")
		for _, e := range []map[string]string{env, target} {
			if err := accepted(e); err != nil {
				t.Errorf("%s: the replicator refuses %v: %v", w.Metadata.Name, e, err)
			}
		}
	}
}
