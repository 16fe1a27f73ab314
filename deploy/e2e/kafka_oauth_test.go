package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/golang-jwt/jwt/v5"

	"profiles/deploy/internal/devkey"
	"profiles/platform/kafkax"
	"profiles/platform/testenv"
)

// The secured broker also takes SASL/OAUTHBEARER (deploy/test.sh starts it
// with kafka.sh --oauth-jwks): Kafka's own JWT validator checks each
// token's ES256 signature against the JWKS that devtoken init wrote to
// PROFILES_TEST_KAFKA_OAUTH_DIR, its exp, and its aud against the audience
// in that directory's issuer.json. The principal is the token's sub. The
// token endpoint is the test's own (oauthServer): it signs with the same
// key, so the broker needs no endpoint of its own.
var secureOAuthDir = os.Getenv("PROFILES_TEST_KAFKA_OAUTH_DIR")

func needOAuthKafka(t *testing.T) {
	t.Helper()
	needSecureKafka(t)
	if secureOAuthDir == "" {
		testenv.Missing(t, "PROFILES_TEST_KAFKA_OAUTH_DIR is not set (the SASL_SSL broker's OAuth signing key); run `make test`")
	}
}

// oauthServer is an OAuth 2.0 token endpoint (client-credentials grant,
// RFC 6749 section 4.4) for a fixed set of clients: it issues ES256 JWTs
// with sub = the client id, the audience it was made with, the scope asked
// for, and exp. The broker does not ask it for the JWKS: it reads the file
// devtoken wrote before the broker started, so that the broker's start
// does not depend on a test process.
type oauthServer struct {
	*httptest.Server
	key              *ecdsa.PrivateKey
	audience, issuer string
	ttl              time.Duration
	clients          map[string]string // id -> secret
	// forger, when set, signs the tokens instead of key, under key's kid:
	// a forgery the broker must refuse.
	forger *ecdsa.PrivateKey

	mu     sync.Mutex
	issued map[string]int  // tokens issued per client
	denied map[string]int  // requests refused per client
	scopes map[string]bool // scopes asked for
}

// newOAuthServer serves tokens signed with the broker's key, for the
// audience the broker expects unless audience is given.
func newOAuthServer(t *testing.T, clients map[string]string, audience string) *oauthServer {
	t.Helper()
	key, err := devkey.Load(secureOAuthDir)
	if err != nil {
		t.Fatalf("the OAuth signing key: %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(secureOAuthDir, "issuer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var settings struct{ Audience, Issuer string }
	if err := json.Unmarshal(raw, &settings); err != nil {
		t.Fatal(err)
	}
	if audience == "" {
		audience = settings.Audience
	}
	o := &oauthServer{
		key: key, audience: audience, issuer: settings.Issuer, ttl: 10 * time.Minute, clients: clients,
		issued: map[string]int{}, denied: map[string]int{}, scopes: map[string]bool{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", o.token)
	o.Server = httptest.NewServer(mux)
	t.Cleanup(o.Close)
	return o
}

func (o *oauthServer) token(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	fail := func(status int, code, desc string) {
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" {
		fail(http.StatusBadRequest, "unsupported_grant_type", "only client_credentials")
		return
	}
	id, secret, ok := r.BasicAuth()
	if ok {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	want, known := o.clients[id]
	if !known || subtle.ConstantTimeCompare([]byte(secret), []byte(want)) != 1 {
		o.mu.Lock()
		o.denied[id]++
		o.mu.Unlock()
		fail(http.StatusUnauthorized, "invalid_client", "unknown client or wrong secret")
		return
	}
	now := time.Now()
	claims := jwt.MapClaims{
		"sub": id, "aud": o.audience, "iss": o.issuer, "scope": r.PostForm.Get("scope"),
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(o.ttl).Unix(),
	}
	tok, err := devkey.Sign(o.key, claims)
	if o.forger != nil {
		forged := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
		forged.Header["kid"] = devkey.KeyID(&o.key.PublicKey)
		tok, err = forged.SignedString(o.forger)
	}
	if err != nil {
		fail(http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	o.mu.Lock()
	o.issued[id]++
	for _, s := range strings.Fields(r.PostForm.Get("scope")) {
		o.scopes[s] = true
	}
	o.mu.Unlock()
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": int(o.ttl.Seconds())})
}

func (o *oauthServer) counts(id string) (issued, denied int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.issued[id], o.denied[id]
}

// oauthSecurity is how client id connects to the secured broker with
// OAUTHBEARER, through o.
func oauthSecurity(o *oauthServer, id, secret string) kafkax.Security {
	return kafkax.Security{
		Protocol: kafkax.ProtocolSASLSSL, TLSCAFile: filepath.Join(secureDir, "tls", "ca.pem"),
		SASLMechanism: kafkax.MechanismOAuthBearer, OAuthTokenURL: o.URL + "/token",
		OAuthClientID: id, OAuthClientSecret: secret, OAuthScopes: []string{"kafka"},
		SASLExtensions: map[string]string{"logicalCluster": "lkc-test"},
	}
}

// oauthEnv is the environment of a service that connects as client id,
// its secret in a file of dir.
func oauthEnv(t *testing.T, o *oauthServer, dir, id string) map[string]string {
	t.Helper()
	file := filepath.Join(dir, id+".oauth-secret")
	if err := os.WriteFile(file, []byte(o.clients[id]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"KAFKA_SECURITY_PROTOCOL":        kafkax.ProtocolSASLSSL,
		"KAFKA_TLS_CA_FILE":              filepath.Join(secureDir, "tls", "ca.pem"),
		"KAFKA_SASL_MECHANISM":           kafkax.MechanismOAuthBearer,
		"KAFKA_OAUTH_TOKEN_URL":          o.URL + "/token",
		"KAFKA_OAUTH_CLIENT_ID":          id,
		"KAFKA_OAUTH_CLIENT_SECRET_FILE": file,
		"KAFKA_OAUTH_SCOPES":             "kafka",
		"KAFKA_SASL_EXTENSIONS":          "logicalCluster=lkc-test,identityPoolId=pool-test",
	}
}

func randomSecret() string { return fmt.Sprintf("%016x%016x", rand.Uint64(), rand.Uint64()) }

// A kafkax client authenticates with OAUTHBEARER: it gets a token from the
// endpoint with its client credentials, the broker validates it with
// Kafka's own validator and the ACLs apply to the token's sub; a record
// goes there and back. A wrong client secret stops the connection at once
// with the endpoint's reason, and a token the broker must not accept (for
// another audience) is refused by the broker.
func TestKafkaOAuthClient(t *testing.T) {
	needOAuthKafka(t)
	n := newSecureNames(t)
	client := n.prefix + ".client"
	topic := n.prefix + ".roundtrip"
	o := newOAuthServer(t, map[string]string{client: randomSecret()}, "")
	createACLs(t, []grant{
		{client, topicRes, topic, literal, []sarama.AclOperation{read, write, describe, create}},
		{client, groupRes, n.prefix + ".", prefixed, []sarama.AclOperation{read}},
	})

	sec := oauthSecurity(o, client, o.clients[client])
	if err := sec.Load(); err != nil {
		t.Fatal(err)
	}
	cfg := kafkax.Config{Brokers: []string{secureBrokers}, Security: sec}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, err := kafkax.NewAdmin(ctx, cfg, "e2e-oauth-admin")
	if err != nil {
		t.Fatalf("connect with OAUTHBEARER: %v", err)
	}
	defer admin.Close()
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1}, false); err != nil {
		t.Fatalf("create %s as %s: %v", topic, client, err)
	}

	p, err := sarama.NewSyncProducer(cfg.Brokers, cfg.ProducerSarama("e2e-oauth"))
	if err != nil {
		t.Fatalf("producer with OAUTHBEARER: %v", err)
	}
	defer p.Close()
	value := "over OAUTHBEARER " + randomSecret()
	part, off, err := p.SendMessage(&sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder("k"), Value: sarama.StringEncoder(value)})
	if err != nil {
		t.Fatalf("produce with OAUTHBEARER: %v", err)
	}
	c, err := sarama.NewConsumer(cfg.Brokers, cfg.Sarama("e2e-oauth-consumer"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pc, err := c.ConsumePartition(topic, part, off)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	select {
	case m := <-pc.Messages():
		if string(m.Value) != value {
			t.Fatalf("read %q, want %q", m.Value, value)
		}
	case e := <-pc.Errors():
		t.Fatalf("consume with OAUTHBEARER: %v", e)
	case <-time.After(30 * time.Second):
		t.Fatal("the record did not come back within 30s")
	}
	issued, _ := o.counts(client)
	if issued == 0 || !o.scopes["kafka"] {
		t.Fatalf("the token endpoint issued %d tokens (scopes %v)", issued, o.scopes)
	}
	// Every configuration of the loaded Security shares one cached token.
	if issued != 1 {
		t.Errorf("the token endpoint issued %d tokens to one process, want 1 (the cache)", issued)
	}

	// The principal is the token's sub, and the ACLs apply to it: the
	// client may not touch another system's event log.
	t.Run("ACLs apply to the sub", func(t *testing.T) {
		_, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: n.events, Value: sarama.StringEncoder("x")})
		if !errors.Is(err, sarama.ErrTopicAuthorizationFailed) && !errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			t.Fatalf("write to %s: err = %v, want an authorization failure", n.events, err)
		}
	})

	t.Run("wrong client secret", func(t *testing.T) {
		bad := oauthSecurity(o, client, "not-the-secret")
		if err := bad.Load(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err := kafkax.Connect(context.Background(), kafkax.Config{Brokers: []string{secureBrokers}, Security: bad}, "e2e-oauth-wrong")
		if !errors.Is(err, kafkax.ErrOAuthRejected) || !strings.Contains(err.Error(), "invalid_client") {
			t.Fatalf("connect with a wrong client secret: err = %v, want %v with invalid_client", err, kafkax.ErrOAuthRejected)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Fatalf("a refused client was retried for %s", d)
		}
		t.Logf("after %s: %v", time.Since(start).Round(time.Millisecond), err)
	})

	// The broker validates the tokens itself: one for another audience,
	// and one signed with another key under the right kid, are refused.
	refused := func(t *testing.T, other *oauthServer) {
		t.Helper()
		sc := kafkax.Config{Brokers: []string{secureBrokers}, Security: oauthSecurity(other, client, "s")}.Sarama("e2e-oauth-refused")
		sc.Metadata.Retry.Max = 1
		c, err := sarama.NewClient([]string{secureBrokers}, sc)
		if err == nil {
			c.Close()
		}
		if !errors.Is(err, sarama.ErrSASLAuthenticationFailed) {
			t.Fatalf("err = %v, want %v", err, sarama.ErrSASLAuthenticationFailed)
		}
		if issued, _ := other.counts(client); issued == 0 {
			t.Fatal("no token was asked for: the broker refused something else")
		}
	}
	t.Run("token for another audience", func(t *testing.T) {
		refused(t, newOAuthServer(t, map[string]string{client: "s"}, "not-kafka"))
	})
	t.Run("token signed with another key", func(t *testing.T) {
		forged := newOAuthServer(t, map[string]string{client: "s"}, "")
		var err error
		if forged.forger, err = ecdsa.GenerateKey(elliptic.P256(), crand.Reader); err != nil {
			t.Fatal(err)
		}
		refused(t, forged)
	})
}

// The system runs on the secured broker with OAUTHBEARER: every service,
// the replay CLI and the replicator take their Kafka credentials from the
// token endpoint as clients named like their SCRAM users, so the same ACLs
// apply to their tokens' sub. A service whose client secret is wrong stops
// at start with the endpoint's reason.
func TestKafkaOAuthEndToEnd(t *testing.T) {
	needOAuthKafka(t)
	n := newSecureNames(t)
	createACLs(t, serviceACLs(n))
	users := []string{"command-svc", "query-svc", "projector", "replay", "replicator"}
	clients := map[string]string{}
	for _, u := range users {
		clients[u] = randomSecret()
	}
	o := newOAuthServer(t, clients, "")
	dir := t.TempDir()
	kindEnv := map[string]map[string]string{}
	for _, u := range users {
		kindEnv[u] = oauthEnv(t, o, dir, u)
	}
	s := StartSystem(t, Options{Brokers: secureBrokers, KafkaSecurity: secureSecurity("admin"), Env: n.env(), KindEnv: kindEnv})

	for _, name := range []string{"command-svc-0", "query-svc-0", "projector-0"} {
		user := strings.TrimSuffix(name, "-0")
		if !logContains(t, s, name, `"sasl_mechanism":"OAUTHBEARER"`) || !logContains(t, s, name, `"oauth_client_id":"`+user+`"`) {
			t.Fatalf("%s did not log that it connects with OAUTHBEARER as %s", name, user)
		}
		if !logContains(t, s, name, "got an OAuth token") {
			t.Fatalf("%s did not log its token", name)
		}
		if logContains(t, s, name, clients[user]) {
			t.Fatalf("%s logged its client secret", name)
		}
		if issued, _ := o.counts(user); issued == 0 {
			t.Fatalf("no token was issued to %s", user)
		}
	}

	r := s.Do(http.MethodPost, "/api/profile", map[string]string{"username": "oauth", "email": "oauth-1@mail.com"}, nil)
	if r.Status != http.StatusCreated {
		t.Fatalf("POST = %d %s", r.Status, r.Body)
	}
	var p profile
	r.JSON(t, &p)
	if r = s.Do(http.MethodGet, "/api/profile/"+p.UID, nil, nil); r.Status != http.StatusOK {
		t.Fatalf("GET = %d %s", r.Status, r.Body)
	}
	if found := s.search("oauth-1@mail.com"); !contains(found, p.UID) {
		t.Fatalf("search = %v, want %s", found, p.UID)
	}

	// The replay CLI, as its own OAuth client, reads the event log.
	out := s.Replay("status")
	if issued, _ := o.counts("replay"); issued == 0 {
		t.Fatalf("replay status did not get a token:\n%s", out)
	}

	// The replicator, as its own OAuth client, feeds PostgreSQL.
	dbURL := createDatabase(t)
	s.startReplicator(map[string]string{"SINK": "postgres", "POSTGRES_URL": dbURL})
	deadline := time.Now().Add(2 * time.Minute)
	for strings.TrimSpace(psql(t, dbURL, "SELECT count(*) FROM profiles WHERE uid = '"+p.UID+"'")) != "1" {
		if time.Now().After(deadline) {
			t.Fatalf("the replicator did not store %s in PostgreSQL", p.UID)
		}
		time.Sleep(200 * time.Millisecond)
	}

	for _, name := range []string{"command-svc-0", "query-svc-0", "projector-0", "replicator-0"} {
		if logContains(t, s, name, "not authorized") || logContains(t, s, name, "authorization failed") {
			t.Errorf("%s logged an authorization failure with its own token", name)
		}
	}

	t.Run("projector with a wrong client secret", func(t *testing.T) {
		wrong := filepath.Join(t.TempDir(), "wrong.secret")
		if err := os.WriteFile(wrong, []byte("not-the-secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		s.Stop("projector-0")
		_, deniedBefore := o.counts("projector")
		s.SetEnv("projector-0", "KAFKA_OAUTH_CLIENT_SECRET_FILE", wrong)
		start := time.Now()
		s.Start("projector-0")
		for !s.Exited("projector-0") {
			if time.Since(start) > 60*time.Second {
				t.Fatal("projector-0 with a wrong client secret still runs after 60s")
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !logContains(t, s, "projector-0", "the token endpoint refused the client") || !logContains(t, s, "projector-0", "invalid_client") {
			t.Fatal("projector-0 exited without saying that the token endpoint refused it")
		}
		if _, denied := o.counts("projector"); denied <= deniedBefore {
			t.Fatal("the token endpoint saw no refused request")
		}
		t.Logf("projector-0 exited %s after its start", time.Since(start).Round(time.Millisecond))
	})
}
