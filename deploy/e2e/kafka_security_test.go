package e2e

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"profiles/platform/kafkax"
	"profiles/platform/testenv"
)

// The secured broker deploy/test.sh starts (kafka.sh start --sasl-ssl):
// SASL_SSL with a SCRAM user per service, the StandardAuthorizer, and admin
// as the only super user. Its CA is DIR/tls/ca.pem and user U's password is
// in DIR/secrets/U.password.
var (
	secureBrokers = os.Getenv("PROFILES_TEST_KAFKA_SECURE")
	secureDir     = os.Getenv("PROFILES_TEST_KAFKA_SECURE_DIR")
)

// needSecureKafka skips (loudly) or fails the test when there is no
// secured broker.
func needSecureKafka(t *testing.T) {
	t.Helper()
	needKafka(t)
	if secureBrokers == "" || secureDir == "" {
		testenv.Missing(t, "PROFILES_TEST_KAFKA_SECURE or PROFILES_TEST_KAFKA_SECURE_DIR is not set (the SASL_SSL broker); run `make test`")
	}
}

// secureSecurity is how user connects to the secured broker.
func secureSecurity(user string) kafkax.Security {
	return kafkax.Security{
		Protocol: kafkax.ProtocolSASLSSL, TLSCAFile: filepath.Join(secureDir, "tls", "ca.pem"),
		SASLMechanism: kafkax.MechanismSCRAMSHA512, SASLUsername: user,
		SASLPasswordFile: filepath.Join(secureDir, "secrets", user+".password"),
	}
}

// secureEnv is the environment of a service that connects as user.
func secureEnv(user string) map[string]string {
	s := secureSecurity(user)
	return map[string]string{
		"KAFKA_SECURITY_PROTOCOL":  s.Protocol,
		"KAFKA_TLS_CA_FILE":        s.TLSCAFile,
		"KAFKA_SASL_MECHANISM":     s.SASLMechanism,
		"KAFKA_SASL_USERNAME":      s.SASLUsername,
		"KAFKA_SASL_PASSWORD_FILE": s.SASLPasswordFile,
	}
}

// secureClient connects to the secured broker as user.
func secureClient(t *testing.T, user string, tweak func(*sarama.Config)) (sarama.Client, error) {
	t.Helper()
	sc := kafkax.Config{Brokers: []string{secureBrokers}, Security: secureSecurity(user)}.Sarama("e2e-" + user)
	sc.Metadata.Retry.Max = 2
	if tweak != nil {
		tweak(sc)
	}
	return sarama.NewClient([]string{secureBrokers}, sc)
}

// secureNames are the topics and groups of one system on the secured
// broker: the test chooses them, so that the ACLs can name them.
type secureNames struct {
	prefix                                                            string
	events, snapshots, emailIndex, claims, deadLetters, control, keys string
	commandGroup, queryGroup, projectorGroup                          string
}

func newSecureNames(t *testing.T) secureNames {
	p := fmt.Sprintf("sec-%s-%06d", strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())), rand.IntN(1e6))
	return secureNames{
		prefix: p, events: p + ".events", snapshots: p + ".snapshots", emailIndex: p + ".email-index",
		claims: p + ".email-claims", deadLetters: p + ".dead-letters", control: p + ".control", keys: p + ".profile-keys",
		commandGroup: p + ".command", queryGroup: p + ".query", projectorGroup: p + ".projector",
	}
}

func (n secureNames) env() map[string]string {
	return map[string]string{
		"EVENTS_TOPIC": n.events, "SNAPSHOTS_TOPIC": n.snapshots, "EMAIL_INDEX_TOPIC": n.emailIndex,
		"EMAIL_CLAIMS_TOPIC": n.claims, "DEAD_LETTER_TOPIC": n.deadLetters, "CONTROL_TOPIC": n.control, "KEYS_TOPIC": n.keys,
		"COMMAND_GROUP": n.commandGroup, "QUERY_GROUP": n.queryGroup, "PROJECTOR_GROUP": n.projectorGroup,
	}
}

// grant is one ACL: principal may do ops on a resource.
type grant struct {
	user    string
	typ     sarama.AclResourceType
	name    string
	pattern sarama.AclResourcePatternType
	ops     []sarama.AclOperation
}

var (
	topicRes  = sarama.AclResourceTopic
	groupRes  = sarama.AclResourceGroup
	txnRes    = sarama.AclResourceTransactionalID
	literal   = sarama.AclPatternLiteral
	prefixed  = sarama.AclPatternPrefixed
	read      = sarama.AclOperationRead
	write     = sarama.AclOperationWrite
	describe  = sarama.AclOperationDescribe
	create    = sarama.AclOperationCreate
	describeC = sarama.AclOperationDescribeConfigs
)

// serviceACLs are what each service needs, derived from the code:
//
//   - every service ensures the base topics at start (topology.Connect:
//     create if missing, describe, check configs), and query-svc and the
//     projector create the topics of a new snapshot generation (<topic>.vN):
//     Create, Describe and DescribeConfigs on the system's topics;
//   - command-svc reads and writes the event log and the email claims in
//     transactions (transactional ids <COMMAND_GROUP>-<partition>), and
//     owns partitions through its group;
//   - the projector reads the event log and the control topic, and writes
//     the snapshots and the email index of every generation in
//     transactions (transactional id <PROJECTOR_GROUP>-<instance id>), and
//     dead letters; its groups are <PROJECTOR_GROUP>[.vN];
//   - query-svc reads the snapshots, the email index, the event log (its
//     groups follow it too) and the control topic, and writes dead
//     letters; its groups are <QUERY_GROUP>[.vN];
//   - replay (snapshots -switch) reads the event log, creates and writes
//     the topics of a new generation, writes the control topic, commits
//     the start offsets of the new generation's projector group and reads
//     the live one's (verify waits for it);
//   - the replicator (SINK=postgres) follows the control topic and reads
//     the snapshots of the current generation, with no group.
func serviceACLs(n secureNames) []grant {
	var gs []grant
	for _, u := range []string{"command-svc", "query-svc", "projector"} {
		gs = append(gs, grant{u, topicRes, n.prefix + ".", prefixed, []sarama.AclOperation{create, describe, describeC}})
	}
	return append(gs,
		grant{"command-svc", topicRes, n.events, literal, []sarama.AclOperation{read, write}},
		grant{"command-svc", topicRes, n.claims, literal, []sarama.AclOperation{read, write}},
		grant{"command-svc", topicRes, n.keys, literal, []sarama.AclOperation{read, write}},
		grant{"command-svc", groupRes, n.commandGroup, literal, []sarama.AclOperation{read}},
		grant{"command-svc", txnRes, n.commandGroup + "-", prefixed, []sarama.AclOperation{write, describe}},

		grant{"projector", topicRes, n.events, literal, []sarama.AclOperation{read}},
		grant{"projector", topicRes, n.control, literal, []sarama.AclOperation{read}},
		grant{"projector", topicRes, n.keys, literal, []sarama.AclOperation{read}},
		grant{"projector", topicRes, n.snapshots, prefixed, []sarama.AclOperation{read, write}},
		grant{"projector", topicRes, n.emailIndex, prefixed, []sarama.AclOperation{read, write}},
		grant{"projector", topicRes, n.deadLetters, literal, []sarama.AclOperation{write}},
		grant{"projector", groupRes, n.projectorGroup, prefixed, []sarama.AclOperation{read}},
		grant{"projector", txnRes, n.projectorGroup + "-", prefixed, []sarama.AclOperation{write, describe}},

		grant{"query-svc", topicRes, n.events, literal, []sarama.AclOperation{read}},
		grant{"query-svc", topicRes, n.control, literal, []sarama.AclOperation{read}},
		grant{"query-svc", topicRes, n.keys, literal, []sarama.AclOperation{read}},
		grant{"query-svc", topicRes, n.snapshots, prefixed, []sarama.AclOperation{read}},
		grant{"query-svc", topicRes, n.emailIndex, prefixed, []sarama.AclOperation{read}},
		grant{"query-svc", topicRes, n.deadLetters, literal, []sarama.AclOperation{write}},
		grant{"query-svc", groupRes, n.queryGroup, prefixed, []sarama.AclOperation{read}},

		grant{"replay", topicRes, n.prefix + ".", prefixed, []sarama.AclOperation{create, describe, describeC}},
		grant{"replay", topicRes, n.events, literal, []sarama.AclOperation{read}},
		grant{"replay", topicRes, n.control, literal, []sarama.AclOperation{read, write}},
		grant{"replay", topicRes, n.keys, literal, []sarama.AclOperation{read}},
		grant{"replay", topicRes, n.snapshots, prefixed, []sarama.AclOperation{read, write}},
		grant{"replay", topicRes, n.emailIndex, prefixed, []sarama.AclOperation{read, write}},
		grant{"replay", groupRes, n.projectorGroup, prefixed, []sarama.AclOperation{read}},

		grant{"replicator", topicRes, n.prefix + ".", prefixed, []sarama.AclOperation{create, describe, describeC}},
		grant{"replicator", topicRes, n.control, literal, []sarama.AclOperation{read}},
		grant{"replicator", topicRes, n.keys, literal, []sarama.AclOperation{read}},
		grant{"replicator", topicRes, n.snapshots, prefixed, []sarama.AclOperation{read}},
	)
}

// createACLs creates the grants as admin, and removes them when the test ends.
func createACLs(t *testing.T, grants []grant) {
	t.Helper()
	client, err := secureClient(t, "admin", nil)
	if err != nil {
		t.Fatalf("connect to %s as admin: %v", secureBrokers, err)
	}
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	var racls []*sarama.ResourceAcls
	var filters []sarama.AclFilter
	for _, g := range grants {
		ra := &sarama.ResourceAcls{Resource: sarama.Resource{ResourceType: g.typ, ResourceName: g.name, ResourcePatternType: g.pattern}}
		for _, op := range g.ops {
			ra.Acls = append(ra.Acls, &sarama.Acl{Principal: "User:" + g.user, Host: "*", Operation: op, PermissionType: sarama.AclPermissionAllow})
		}
		racls = append(racls, ra)
		name := g.name
		filters = append(filters, sarama.AclFilter{ResourceType: g.typ, ResourceName: &name, ResourcePatternTypeFilter: g.pattern, Operation: sarama.AclOperationAny, PermissionType: sarama.AclPermissionAny})
	}
	if err := admin.CreateACLs(racls); err != nil {
		t.Fatalf("create ACLs: %v", err)
	}
	t.Cleanup(func() {
		for _, f := range filters {
			_, _ = admin.DeleteACL(f, false)
		}
		_ = admin.Close()
	})
}

// startSecureSystem starts a system on the secured broker in which each
// service connects with its own credentials and has only its own ACLs.
func startSecureSystem(t *testing.T) (*System, secureNames) {
	t.Helper()
	needSecureKafka(t)
	n := newSecureNames(t)
	createACLs(t, serviceACLs(n))
	s := StartSystem(t, Options{
		Brokers:       secureBrokers,
		KafkaSecurity: secureSecurity("admin"),
		Env:           n.env(),
		KindEnv: map[string]map[string]string{
			"command-svc": secureEnv("command-svc"),
			"query-svc":   secureEnv("query-svc"),
			"projector":   secureEnv("projector"),
			"replay":      secureEnv("replay"),
			"replicator":  secureEnv("replicator"),
		},
	})
	return s, n
}

// The system works end to end against a SASL_SSL broker with ACLs: each
// service connects over TLS as its own SCRAM user, and the seed's flow
// (create, get, search, change, delete) succeeds through the front door.
func TestKafkaSecureEndToEnd(t *testing.T) {
	s, n := startSecureSystem(t)
	for _, name := range []string{"command-svc-0", "query-svc-0", "projector-0"} {
		user := strings.TrimSuffix(name, "-0")
		if !logContains(t, s, name, `"protocol":"SASL_SSL"`) || !logContains(t, s, name, `"sasl_username":"`+user+`"`) {
			t.Fatalf("%s did not log that it connects over SASL_SSL as %s", name, user)
		}
		if logContains(t, s, name, readPassword(t, user)) {
			t.Fatalf("%s logged its password", name)
		}
	}

	r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "sec", "email": "sec-1@mail.com"}, nil)
	if r.Status != http.StatusCreated {
		t.Fatalf("POST = %d %s", r.Status, r.Body)
	}
	var p profile
	r.JSON(t, &p)
	if r = s.Do(http.MethodGet, "/api/profile/"+p.UID, nil, nil); r.Status != http.StatusOK {
		t.Fatalf("GET = %d %s", r.Status, r.Body)
	}
	if found := s.search("sec-1@mail.com"); !contains(found, p.UID) {
		t.Fatalf("search = %v, want %s", found, p.UID)
	}
	r = s.Do(http.MethodPut, "/api/profile/"+p.UID, map[string]string{"username": "sec2", "email": "sec-2@mail.com"}, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("PUT = %d %s", r.Status, r.Body)
	}
	var changed profile
	r.JSON(t, &changed)
	if changed.Username != "sec2" || changed.Email != "sec-2@mail.com" || changed.Version != 3 {
		t.Fatalf("PUT answered %+v", changed)
	}
	if found := s.search("sec-2@mail.com"); !contains(found, p.UID) {
		t.Fatalf("search after PUT = %v, want %s", found, p.UID)
	}
	if found := s.search("sec-1@mail.com"); contains(found, p.UID) {
		t.Fatalf("search of the old email still finds %s", p.UID)
	}
	if r = s.Do(http.MethodDelete, "/api/profile/"+p.UID, nil, nil); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE = %d %s", r.Status, r.Body)
	}
	if r = s.Do(http.MethodGet, "/api/profile/"+p.UID, nil, nil); r.Status != http.StatusNotFound {
		t.Fatalf("GET after DELETE = %d %s", r.Status, r.Body)
	}

	// The replay CLI, as its own user, builds snapshot generation 2 and
	// switches to it; the projector and query-svc follow it (new topics,
	// new groups) within their ACLs, and the system still works.
	out := s.Replay("snapshots", "-switch")
	if !strings.Contains(out, "generation 2") {
		t.Fatalf("unexpected replay output:\n%s", out)
	}
	deadline := time.Now().Add(90 * time.Second)
	for _, name := range []string{"query-svc-0", "projector-0"} {
		for s.MetricOr(name, "profiles_snapshot_generation", 0) != 2 {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not move to generation 2", name)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	r = s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "gen2", "email": "sec-3@mail.com"}, nil)
	if r.Status != http.StatusCreated {
		t.Fatalf("POST after the switch = %d %s", r.Status, r.Body)
	}
	r.JSON(t, &p)
	if r = s.Do(http.MethodGet, "/api/profile/"+p.UID, nil, nil); r.Status != http.StatusOK {
		t.Fatalf("GET after the switch = %d %s", r.Status, r.Body)
	}
	if found := s.search("sec-3@mail.com"); !contains(found, p.UID) {
		t.Fatalf("search after the switch = %v, want %s", found, p.UID)
	}

	// The replicator, as its own user, feeds PostgreSQL from generation 2.
	dbURL := createDatabase(t)
	s.startReplicator(map[string]string{"SINK": "postgres", "POSTGRES_URL": dbURL})
	for strings.TrimSpace(psql(t, dbURL, "SELECT count(*) FROM profiles WHERE uid = '"+p.UID+"'")) != "1" {
		if time.Now().After(deadline.Add(time.Minute)) {
			t.Fatalf("the replicator did not store %s in PostgreSQL", p.UID)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The events really are on the secured broker, in the system's topic.
	c, err := secureClient(t, "admin", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var total int64
	parts, err := c.Partitions(n.events)
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range parts {
		end, err := c.GetOffset(n.events, part, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		total += end
	}
	if total < 4 { // created, two changes, deleted (plus transaction markers)
		t.Fatalf("%s holds %d offsets, want at least 4", n.events, total)
	}

	// No ACL is missing: had one been, a service would have logged the
	// refusal even if a retry hid it from the client.
	for _, name := range []string{"command-svc-0", "query-svc-0", "projector-0", "replicator-0"} {
		if logContains(t, s, name, "not authorized") || logContains(t, s, name, "authorization failed") {
			t.Errorf("%s logged an authorization failure with its own credentials", name)
		}
	}
}

// A service that runs with another service's credentials is refused by the
// ACLs, and so is a client with a wrong password.
func TestKafkaSecureForeignCredentials(t *testing.T) {
	s, n := startSecureSystem(t)

	t.Run("wrong password", func(t *testing.T) {
		_, err := secureClient(t, "command-svc", func(sc *sarama.Config) { sc.Net.SASL.Password = "not-the-password" })
		if !errors.Is(err, sarama.ErrSASLAuthenticationFailed) && (err == nil || !strings.Contains(err.Error(), "SASL Authentication failed")) {
			t.Fatalf("connect with a wrong password: err = %v, want SASL authentication failed", err)
		}
	})

	// SCRAM-SHA-256 works too, with the same user.
	t.Run("SCRAM-SHA-256", func(t *testing.T) {
		sec := secureSecurity("command-svc")
		sec.SASLMechanism = kafkax.MechanismSCRAMSHA256
		sc := kafkax.Config{Brokers: []string{secureBrokers}, Security: sec}.Sarama("e2e-sha256")
		if sc.Net.SASL.Mechanism != sarama.SASLTypeSCRAMSHA256 {
			t.Fatalf("mechanism %q", sc.Net.SASL.Mechanism)
		}
		c, err := sarama.NewClient([]string{secureBrokers}, sc)
		if err != nil {
			t.Fatalf("connect with SCRAM-SHA-256: %v", err)
		}
		defer c.Close()
		if _, err := c.Partitions(n.events); err != nil {
			t.Fatalf("describe %s with SCRAM-SHA-256: %v", n.events, err)
		}
	})

	// The projector's user may read the event log but not write it.
	t.Run("projector writes events", func(t *testing.T) {
		err := produceAs(t, "projector", n.events)
		if !errors.Is(err, sarama.ErrTopicAuthorizationFailed) {
			t.Fatalf("the projector's user wrote to %s: err = %v, want %v", n.events, err, sarama.ErrTopicAuthorizationFailed)
		}
		if err := produceAs(t, "projector", n.snapshots); err != nil {
			t.Fatalf("the projector's user cannot write its own %s: %v", n.snapshots, err)
		}
	})

	// query-svc's user may not read the email claims, which only
	// command-svc uses.
	t.Run("query-svc reads claims", func(t *testing.T) {
		c, err := secureClient(t, "query-svc", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cons, err := sarama.NewConsumerFromClient(c)
		if err != nil {
			t.Fatal(err)
		}
		defer cons.Close()
		pc, err := cons.ConsumePartition(n.claims, 0, sarama.OffsetOldest)
		if err == nil {
			select {
			case e := <-pc.Errors():
				err = e.Err
			case m := <-pc.Messages():
				err = fmt.Errorf("read a record: %v", m)
			case <-time.After(10 * time.Second):
			}
			pc.Close()
		}
		if !errors.Is(err, sarama.ErrTopicAuthorizationFailed) {
			t.Fatalf("query-svc's user read %s: err = %v, want %v", n.claims, err, sarama.ErrTopicAuthorizationFailed)
		}
	})

	// A service with a wrong password stops at start, saying why, instead
	// of retrying for the two minutes a starting broker gets.
	t.Run("projector with a wrong password", func(t *testing.T) {
		wrong := filepath.Join(t.TempDir(), "wrong.password")
		if err := os.WriteFile(wrong, []byte("not-the-password\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		s.Stop("projector-0")
		s.SetEnv("projector-0", "KAFKA_SASL_PASSWORD_FILE", wrong)
		start := time.Now()
		s.Start("projector-0")
		for !s.Exited("projector-0") {
			if time.Since(start) > 60*time.Second {
				t.Fatal("projector-0 with a wrong password still runs after 60s")
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !logContains(t, s, "projector-0", sarama.ErrSASLAuthenticationFailed.Error()) {
			t.Fatalf("projector-0 exited without saying %q", sarama.ErrSASLAuthenticationFailed)
		}
		t.Logf("projector-0 exited %s after its start", time.Since(start).Round(time.Millisecond))
	})

	// command-svc restarted with query-svc's credentials: it may not join
	// command-svc's group (nor write the event log), so it never becomes
	// ready, it says why, and writes fail.
	t.Run("command-svc as query-svc", func(t *testing.T) {
		s.Stop("command-svc-0")
		for k, v := range secureEnv("query-svc") {
			s.SetEnv("command-svc-0", k, v)
		}
		// It never owns a partition: the POST below is refused once the
		// route wait is over.
		s.SetEnv("command-svc-0", "ROUTE_WAIT", "3s")
		s.Start("command-svc-0")
		deadline := time.Now().Add(90 * time.Second)
		for !logContains(t, s, "command-svc-0", sarama.ErrGroupAuthorizationFailed.Error()) {
			if time.Now().After(deadline) {
				t.Fatalf("command-svc-0 with query-svc's credentials did not report %q within 90s", sarama.ErrGroupAuthorizationFailed)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if ready(s, "command-svc-0") {
			t.Fatal("command-svc-0 is ready with query-svc's credentials")
		}
		r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "mallory", "email": "mallory@mail.com"}, nil)
		if r.Status < 500 {
			t.Fatalf("POST with command-svc on query-svc's credentials = %d %s, want a 5xx", r.Status, r.Body)
		}
		t.Logf("POST answered %d %s", r.Status, r.Body)
	})
}

// produceAs writes one record to topic as user (an idempotent producer,
// as the services use) and returns the error.
func produceAs(t *testing.T, user, topic string) error {
	t.Helper()
	sc := kafkax.Config{Brokers: []string{secureBrokers}, Security: secureSecurity(user)}.ProducerSarama("e2e-" + user)
	sc.Producer.Retry.Max = 1
	sc.Metadata.Retry.Max = 1
	p, err := sarama.NewSyncProducer([]string{secureBrokers}, sc)
	if err != nil {
		return err
	}
	defer p.Close()
	_, _, err = p.SendMessage(&sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder("k"), Value: sarama.StringEncoder("v")})
	return err
}

// logContains reports whether an instance's log holds s.
func logContains(t *testing.T, sys *System, name, s string) bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(sys.dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), s)
}

func readPassword(t *testing.T, user string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(secureDir, "secrets", user+".password"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// ready reports whether an instance answers /readyz with 200.
func ready(s *System, name string) bool {
	resp, err := http.Get(s.URLOf(name) + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
