package helm

import (
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"profiles/platform/config"
	"profiles/platform/kafkax"
)

// workload is the part of a rendered StatefulSet or Deployment these tests
// read: each container's command, environment and mounts, and the pod's
// volumes.
type workload struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Template struct {
			Spec struct {
				Containers []container `yaml:"containers"`
				Volumes    []struct {
					Name   string `yaml:"name"`
					Secret *struct {
						SecretName string `yaml:"secretName"`
						Items      []struct {
							Key  string `yaml:"key"`
							Path string `yaml:"path"`
						} `yaml:"items"`
					} `yaml:"secret"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type container struct {
	Name    string   `yaml:"name"`
	Command []string `yaml:"command"`
	Env     []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom any    `yaml:"valueFrom"`
	} `yaml:"env"`
	VolumeMounts []mount `yaml:"volumeMounts"`
}

type mount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
}

// kafkaServices are the binaries that talk to Kafka. The chart must run
// the first three; the replicator is checked like them once it is in the
// chart.
var kafkaServices = []string{"command-svc", "query-svc", "projector", "replicator"}

// render runs helm template with the test secrets and the values files
// and --set arguments given, and returns the workloads by binary.
func render(t *testing.T, args ...string) (map[string]workload, string, error) {
	t.Helper()
	out, err := run(t, append(append([]string{"template", "rel", "profiles", "--namespace", "ns", "--kube-version", kubeVersion}, secrets...), args...)...)
	if err != nil {
		return nil, out, err
	}
	byBinary := map[string]workload{}
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var w workload
		if err := dec.Decode(&w); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("rendered chart: %v\n%s", err, out)
		}
		if w.Kind != "StatefulSet" && w.Kind != "Deployment" {
			continue
		}
		for _, c := range w.Spec.Template.Spec.Containers {
			if len(c.Command) == 1 {
				byBinary[path.Base(c.Command[0])] = w
			}
		}
	}
	return byBinary, out, nil
}

// secretFile is where a *_FILE variable's file comes from.
type secretFile struct{ secret, key string }

// kafkaEnv is the Kafka security environment of the container that runs
// bin: the plain values, and for each *_FILE variable the Secret and key
// mounted at its path.
func kafkaEnv(t *testing.T, w workload, bin string) (map[string]string, map[string]secretFile) {
	t.Helper()
	i := slices.IndexFunc(w.Spec.Template.Spec.Containers, func(c container) bool { return len(c.Command) == 1 && path.Base(c.Command[0]) == bin })
	c := w.Spec.Template.Spec.Containers[i]
	env := map[string]string{}
	files := map[string]secretFile{}
	for _, e := range c.Env {
		if !strings.HasPrefix(e.Name, "KAFKA_") || e.Name == "KAFKA_BROKERS" {
			continue
		}
		if e.ValueFrom != nil {
			t.Errorf("%s: %s is taken from %v; the chart mounts Kafka credentials as files", bin, e.Name, e.ValueFrom)
		}
		env[e.Name] = e.Value
		if !strings.HasSuffix(e.Name, "_FILE") {
			continue
		}
		dir, file := path.Split(e.Value)
		m := slices.IndexFunc(c.VolumeMounts, func(m mount) bool { return path.Clean(m.MountPath) == path.Clean(dir) })
		if m < 0 {
			t.Errorf("%s: %s=%s, but nothing is mounted at %s", bin, e.Name, e.Value, dir)
			continue
		}
		for _, v := range w.Spec.Template.Spec.Volumes {
			if v.Name != c.VolumeMounts[m].Name || v.Secret == nil {
				continue
			}
			for _, it := range v.Secret.Items {
				if it.Path == file {
					files[e.Name] = secretFile{v.Secret.SecretName, it.Key}
				}
			}
		}
		if _, ok := files[e.Name]; !ok {
			t.Errorf("%s: %s=%s is not a key of a mounted Secret", bin, e.Name, e.Value)
		}
	}
	return env, files
}

// accepted reports what the services' own checks (kafkax.Security's
// Validate, which every service runs at start) say of env, read as
// kafkax.RegisterSecurityFlags reads it.
func accepted(env map[string]string) error {
	ext, err := config.Map(env["KAFKA_SASL_EXTENSIONS"])
	if err != nil {
		return err
	}
	if len(ext) == 0 {
		ext = nil
	}
	s := kafkax.Security{
		Protocol: env["KAFKA_SECURITY_PROTOCOL"], TLSCAFile: env["KAFKA_TLS_CA_FILE"],
		TLSCertFile: env["KAFKA_TLS_CERT_FILE"], TLSKeyFile: env["KAFKA_TLS_KEY_FILE"], TLSServerName: env["KAFKA_TLS_SERVER_NAME"],
		SASLMechanism: env["KAFKA_SASL_MECHANISM"], SASLUsername: env["KAFKA_SASL_USERNAME"],
		SASLPassword: env["KAFKA_SASL_PASSWORD"], SASLPasswordFile: env["KAFKA_SASL_PASSWORD_FILE"],
		OAuthTokenURL: env["KAFKA_OAUTH_TOKEN_URL"], OAuthClientID: env["KAFKA_OAUTH_CLIENT_ID"],
		OAuthClientSecret: env["KAFKA_OAUTH_CLIENT_SECRET"], OAuthClientSecretFile: env["KAFKA_OAUTH_CLIENT_SECRET_FILE"],
		OAuthScopes:    strings.FieldsFunc(env["KAFKA_OAUTH_SCOPES"], func(r rune) bool { return r == ',' || r == ' ' }),
		SASLExtensions: ext,
	}
	return s.Validate()
}

// checkKafka checks that every Kafka service of the rendered chart gets
// exactly the Kafka security variables want (paths of *_FILE variables
// aside), the *_FILE ones from the Secrets and keys in files, that the
// services' own checks accept them, and that the front door gets none.
func checkKafka(t *testing.T, byBinary map[string]workload, want map[string]string, wantFiles map[string]secretFile) {
	t.Helper()
	for _, bin := range kafkaServices {
		w, ok := byBinary[bin]
		if !ok {
			if bin != "replicator" {
				t.Errorf("the chart runs no %s", bin)
			}
			continue
		}
		env, files := kafkaEnv(t, w, bin)
		for k, v := range want {
			if got, ok := env[k]; !ok {
				t.Errorf("%s: no %s, want %q", bin, k, v)
			} else if !strings.HasSuffix(k, "_FILE") && got != v {
				t.Errorf("%s: %s=%q, want %q", bin, k, got, v)
			}
		}
		for k, v := range env {
			if _, ok := want[k]; !ok {
				t.Errorf("%s: %s=%q, which this mode does not take", bin, k, v)
			}
		}
		for k, f := range wantFiles {
			if files[k] != f {
				t.Errorf("%s: %s from Secret %q key %q, want Secret %q key %q", bin, k, files[k].secret, files[k].key, f.secret, f.key)
			}
		}
		if err := accepted(env); err != nil {
			t.Errorf("%s: the services refuse the rendered settings: %v", bin, err)
		}
	}
	if w, ok := byBinary["frontdoor"]; !ok {
		t.Error("the chart runs no frontdoor")
	} else if env, _ := kafkaEnv(t, w, "frontdoor"); len(env) != 0 {
		t.Errorf("frontdoor, which does not talk to Kafka, gets %v", env)
	}
}

// Each security mode the services support renders into the variables
// they read, with the credentials as files from the Secrets named, for
// every Kafka service; and the services accept what is rendered.
func TestKafkaSecurityModes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		set   []string
		want  map[string]string
		files map[string]secretFile
	}{
		{"plaintext", nil, map[string]string{"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, nil},
		{
			"ssl with a private CA",
			[]string{"kafka.securityProtocol=SSL", "kafka.tls.caSecret=kafka-ca"},
			map[string]string{"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_TLS_CA_FILE": ""},
			map[string]secretFile{"KAFKA_TLS_CA_FILE": {"kafka-ca", "ca.pem"}},
		},
		{
			"scram-sha-256 over sasl_plaintext",
			[]string{"kafka.securityProtocol=SASL_PLAINTEXT", "kafka.sasl.mechanism=SCRAM-SHA-256", "kafka.sasl.username=profiles", "kafka.sasl.passwordSecret=kafka-user"},
			map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256", "KAFKA_SASL_USERNAME": "profiles", "KAFKA_SASL_PASSWORD_FILE": ""},
			map[string]secretFile{"KAFKA_SASL_PASSWORD_FILE": {"kafka-user", "password"}},
		},
		{
			"scram-sha-512 over sasl_ssl with a private CA",
			[]string{"kafka.securityProtocol=SASL_SSL", "kafka.sasl.mechanism=SCRAM-SHA-512", "kafka.sasl.username=profiles", "kafka.sasl.passwordSecret=kafka-user", "kafka.tls.caSecret=kafka-ca"},
			map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "profiles", "KAFKA_SASL_PASSWORD_FILE": "", "KAFKA_TLS_CA_FILE": ""},
			map[string]secretFile{"KAFKA_SASL_PASSWORD_FILE": {"kafka-user", "password"}, "KAFKA_TLS_CA_FILE": {"kafka-ca", "ca.pem"}},
		},
		{
			"plain over sasl_ssl",
			[]string{"kafka.securityProtocol=SASL_SSL", "kafka.sasl.mechanism=PLAIN", "kafka.sasl.username=APIKEY", "kafka.sasl.passwordSecret=confluent-api-key"},
			map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "APIKEY", "KAFKA_SASL_PASSWORD_FILE": ""},
			map[string]secretFile{"KAFKA_SASL_PASSWORD_FILE": {"confluent-api-key", "password"}},
		},
		{
			"oauthbearer over sasl_ssl, with scopes and extensions",
			[]string{
				"kafka.securityProtocol=SASL_SSL", "kafka.sasl.mechanism=OAUTHBEARER",
				"kafka.sasl.oauth.tokenUrl=https://idp.example.com/oauth2/token", "kafka.sasl.oauth.clientId=profiles",
				"kafka.sasl.oauth.clientSecretSecret=kafka-oauth", "kafka.sasl.oauth.clientSecretKey=secret",
				"kafka.sasl.oauth.scopes={kafka,profiles}",
				"kafka.sasl.oauth.extensions.logicalCluster=lkc-abc12", "kafka.sasl.oauth.extensions.identityPoolId=pool-Xy1",
			},
			map[string]string{
				"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "OAUTHBEARER",
				"KAFKA_OAUTH_TOKEN_URL": "https://idp.example.com/oauth2/token", "KAFKA_OAUTH_CLIENT_ID": "profiles",
				"KAFKA_OAUTH_CLIENT_SECRET_FILE": "", "KAFKA_OAUTH_SCOPES": "kafka profiles",
				"KAFKA_SASL_EXTENSIONS": "identityPoolId=pool-Xy1,logicalCluster=lkc-abc12",
			},
			map[string]secretFile{"KAFKA_OAUTH_CLIENT_SECRET_FILE": {"kafka-oauth", "secret"}},
		},
		{
			"oauthbearer with the defaults of the optional values",
			[]string{
				"kafka.securityProtocol=SASL_SSL", "kafka.sasl.mechanism=OAUTHBEARER",
				"kafka.sasl.oauth.tokenUrl=https://idp.example.com/oauth2/token", "kafka.sasl.oauth.clientId=profiles",
				"kafka.sasl.oauth.clientSecretSecret=kafka-oauth",
			},
			map[string]string{
				"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "OAUTHBEARER",
				"KAFKA_OAUTH_TOKEN_URL": "https://idp.example.com/oauth2/token", "KAFKA_OAUTH_CLIENT_ID": "profiles",
				"KAFKA_OAUTH_CLIENT_SECRET_FILE": "",
			},
			map[string]secretFile{"KAFKA_OAUTH_CLIENT_SECRET_FILE": {"kafka-oauth", "client-secret"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var args []string
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			byBinary, out, err := render(t, args...)
			if err != nil {
				t.Fatalf("helm template: %v\n%s", err, out)
			}
			checkKafka(t, byBinary, tc.want, tc.files)
			if out, err := run(t, append(append([]string{"lint", "--strict", "profiles", "--kube-version", kubeVersion}, secrets...), args...)...); err != nil {
				t.Errorf("helm lint: %v\n%s", err, out)
			}
		})
	}
}

// The chart refuses the security settings the services would refuse at
// start, naming the value at fault (helm names a bad extension key by the
// key alone: the path it prints with it is not the key's).
func TestKafkaSecurityRefused(t *testing.T) {
	oauth := []string{
		"kafka.securityProtocol=SASL_SSL", "kafka.sasl.mechanism=OAUTHBEARER",
		"kafka.sasl.oauth.tokenUrl=https://idp.example.com/token", "kafka.sasl.oauth.clientId=profiles",
		"kafka.sasl.oauth.clientSecretSecret=kafka-oauth",
	}
	scram := []string{"kafka.sasl.username=profiles", "kafka.sasl.passwordSecret=kafka-user"}
	for _, tc := range []struct {
		name string
		set  []string
		want string
	}{
		{"PLAIN over SASL_PLAINTEXT sends the password in clear",
			append([]string{"kafka.securityProtocol=SASL_PLAINTEXT", "kafka.sasl.mechanism=PLAIN"}, scram...), "/kafka/securityProtocol': value must be 'SASL_SSL'"},
		{"OAUTHBEARER over SASL_PLAINTEXT sends the token in clear",
			append(slices.Clone(oauth), "kafka.securityProtocol=SASL_PLAINTEXT"), "/kafka/securityProtocol': value must be 'SASL_SSL'"},
		{"a mechanism without SASL",
			append([]string{"kafka.securityProtocol=SSL", "kafka.sasl.mechanism=SCRAM-SHA-512"}, scram...), "/kafka/sasl/mechanism': value must be ''"},
		{"SASL without a mechanism",
			[]string{"kafka.securityProtocol=SASL_SSL"}, "/kafka/sasl/mechanism': value must be one of"},
		{"an unknown mechanism",
			append([]string{"kafka.securityProtocol=SASL_SSL", "kafka.sasl.mechanism=GSSAPI"}, scram...), "/kafka/sasl/mechanism"},
		{"SCRAM without a password Secret",
			[]string{"kafka.securityProtocol=SASL_SSL", "kafka.sasl.mechanism=SCRAM-SHA-512", "kafka.sasl.username=profiles"}, "/kafka/sasl/passwordSecret"},
		{"PLAIN without a user name",
			[]string{"kafka.securityProtocol=SASL_SSL", "kafka.sasl.mechanism=PLAIN", "kafka.sasl.passwordSecret=kafka-user"}, "/kafka/sasl/username"},
		{"OAUTHBEARER without a token URL",
			append(slices.Clone(oauth), "kafka.sasl.oauth.tokenUrl="), "/kafka/sasl/oauth/tokenUrl"},
		{"OAUTHBEARER with a token URL in clear",
			append(slices.Clone(oauth), "kafka.sasl.oauth.tokenUrl=http://idp.example.com/token"), "/kafka/sasl/oauth/tokenUrl"},
		{"OAUTHBEARER without a client id",
			append(slices.Clone(oauth), "kafka.sasl.oauth.clientId="), "/kafka/sasl/oauth/clientId"},
		{"OAUTHBEARER without a client secret Secret",
			append(slices.Clone(oauth), "kafka.sasl.oauth.clientSecretSecret="), "/kafka/sasl/oauth/clientSecretSecret"},
		{"an extension key that is not letters",
			append(slices.Clone(oauth), "kafka.sasl.oauth.extensions.logical_cluster=lkc-1"), "invalid propertyName 'logical_cluster'"},
		{"the extension key auth, which is the token's",
			append(slices.Clone(oauth), "kafka.sasl.oauth.extensions.auth=x"), "invalid propertyName 'auth'"},
		{"an extension value with a comma, which would split it",
			append(slices.Clone(oauth), `kafka.sasl.oauth.extensions.logicalCluster=lkc-1\,x`), "/kafka/sasl/oauth/extensions/logicalCluster"},
		{"a misspelt OAuth key",
			append(slices.Clone(oauth), "kafka.sasl.oauth.tokenURL=https://idp.example.com/token"), "tokenURL"},
		{"a CA file without TLS",
			[]string{"kafka.tls.caSecret=kafka-ca"}, "/kafka/tls/caSecret': value must be ''"},
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
}

// The values examples of docs/managed-kafka.md (each ```yaml block of its
// "Confluent Cloud" section) render, and the services accept what they
// render.
func TestManagedKafkaExamples(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "managed-kafka.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(doc), "\n## Confluent Cloud\n")
	section, _, _ = strings.Cut(section, "\n## ")
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(section, -1)
	if len(blocks) < 2 {
		t.Fatalf("docs/managed-kafka.md's Confluent Cloud section has %d values examples, want PLAIN and OAUTHBEARER", len(blocks))
	}
	var mechanisms []string
	for i, b := range blocks {
		f := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(f, []byte(b[1]), 0o600); err != nil {
			t.Fatal(err)
		}
		byBinary, out, err := render(t, "-f", f)
		if err != nil {
			t.Errorf("example %d: helm template: %v\n%s", i+1, err, out)
			continue
		}
		for _, bin := range kafkaServices[:3] {
			env, _ := kafkaEnv(t, byBinary[bin], bin)
			if err := accepted(env); err != nil {
				t.Errorf("example %d: %s: the services refuse it: %v", i+1, bin, err)
			}
			if bin == "command-svc" {
				mechanisms = append(mechanisms, env["KAFKA_SASL_MECHANISM"])
			}
		}
		if !strings.Contains(out, `value: "SASL_SSL"`) {
			t.Errorf("example %d does not use SASL_SSL", i+1)
		}
	}
	for _, m := range []string{"PLAIN", "OAUTHBEARER"} {
		if !slices.Contains(mechanisms, m) {
			t.Errorf("no example of %s (examples use %v)", m, mechanisms)
		}
	}
}
