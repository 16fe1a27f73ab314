package auth

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// logRecorder is a slog.Handler that keeps every record, as text.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	line := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	return nil
}

// count returns how many records start with prefix (a level, and maybe
// the start of a message) and hold every one of parts.
func (l *logRecorder) count(prefix string, parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.HasPrefix(line, prefix) && !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
			n++
		}
	}
	return n
}

func (l *logRecorder) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// writeAtomically replaces path with b, as an operator should (a new file
// renamed over the old one), so that a reload never reads half a file.
func writeAtomically(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond every few milliseconds until it holds, or fails
// the test after a generous deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startFileKeys writes set to a JWKS file in t.TempDir() and loads it,
// reloading every refresh, until the test ends.
func startFileKeys(t *testing.T, set []byte, refresh time.Duration) (*FileKeys, *Verifier, string, *logRecorder) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeAtomically(t, path, set)
	rec := &logRecorder{}
	ctx, cancel := context.WithCancel(context.Background())
	keys, err := KeysFromFile(ctx, path, refresh, slog.New(rec))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		<-keys.done // the reloader has stopped before the directory goes
	})
	v, err := NewVerifier(VerifierConfig{Keys: keys, Audience: testAudience, Issuer: testIssuer, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	return keys, v, path, rec
}

// A JWKS file is reloaded every refresh: after a rotation, a token of the
// new key is accepted and one of the removed key is refused, and the
// change is logged with the key ids, without key material.
func TestKeysFromFileReloadsARotatedKey(t *testing.T) {
	testKeys(t)
	keys, v, path, rec := startFileKeys(t, jwksJSON(t, rsaJWK("rsa-1", &rsaKey.PublicKey)), 10*time.Millisecond)
	claims := goodClaims("u1", ScopeRead)
	oldTok := sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", claims)
	newTok := sign(t, jwt.SigningMethodES256, ecKey, "ec-1", claims)
	if _, err := v.Verify(context.Background(), oldTok); err != nil {
		t.Fatalf("a token of the first key: %v", err)
	}

	writeAtomically(t, path, jwksJSON(t, ecJWK(t, "ec-1", &ecKey.PublicKey)))
	// Only the periodic reload can drop rsa-1 (its kid is known, so
	// verifying its tokens does not reload).
	eventually(t, "the removed key's token is refused", func() bool {
		_, err := v.Verify(context.Background(), oldTok)
		return err != nil
	})
	if _, err := v.Verify(context.Background(), oldTok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("a token of the removed key: %v, want ErrInvalidToken", err)
	}
	if _, err := v.Verify(context.Background(), newTok); err != nil {
		t.Fatalf("a token of the new key: %v", err)
	}
	if got := keys.KIDs(); !slices.Equal(got, []string{"ec-1"}) {
		t.Fatalf("KIDs() = %v, want [ec-1]", got)
	}
	eventually(t, "the change is logged", func() bool { return rec.count("INFO the JWKS file changed") == 1 })
	logged := rec.all()
	for _, want := range []string{"kids=[ec-1]", "added=[ec-1]", "removed=[rsa-1]"} {
		if !strings.Contains(logged, want) {
			t.Errorf("the log lacks %q:\n%s", want, logged)
		}
	}
	for _, material := range []string{b64(rsaKey.N.Bytes()), ecJWK(t, "ec-1", &ecKey.PublicKey)["x"].(string)} {
		if strings.Contains(logged, material) {
			t.Errorf("the log holds key material:\n%s", logged)
		}
	}
	// An unchanged file is not logged again.
	time.Sleep(50 * time.Millisecond)
	if n := rec.count("INFO"); n != 1 {
		t.Fatalf("%d INFO records for one change:\n%s", n, rec.all())
	}
}

// A file that cannot be read, is not a JWKS, or is one that KeysFromJSON
// refuses keeps the keys already loaded, with a WARN each time; a good
// file afterwards is loaded.
func TestKeysFromFileKeepsTheKeysOfABadFile(t *testing.T) {
	testKeys(t)
	_, v, path, rec := startFileKeys(t, jwksJSON(t, rsaJWK("rsa-1", &rsaKey.PublicKey)), 10*time.Millisecond)
	claims := goodClaims("u1", ScopeRead)
	tok := sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", claims)
	private := rsaJWK("rsa-2", &otherRSA.PublicKey)
	private["d"] = b64(otherRSA.D.Bytes())
	bad := []struct {
		name  string
		err   string // in the WARN
		write func()
	}{
		{"corrupt", "not a JWKS", func() { writeAtomically(t, path, []byte(`{"keys":[{"kty":`)) }},
		{"no keys", "has no keys", func() { writeAtomically(t, path, []byte(`{"keys":[]}`)) }},
		{"private key material", "private key material", func() { writeAtomically(t, path, jwksJSON(t, private)) }},
		{"removed", "read the JWKS file", func() {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, b := range bad {
		b.write()
		eventually(t, "a WARN for the "+b.name+" file", func() bool {
			return rec.count("WARN reloading the JWKS file failed", b.err, "kids=[rsa-1]") > 0
		})
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatalf("%s file: the key already loaded was dropped: %v", b.name, err)
		}
	}
	if n := rec.count("INFO"); n != 0 {
		t.Fatalf("a bad file was logged as a change:\n%s", rec.all())
	}
	if strings.Contains(rec.all(), b64(otherRSA.D.Bytes())) {
		t.Fatal("the WARN holds the private key")
	}

	writeAtomically(t, path, jwksJSON(t, rsaJWK("rsa-2", &otherRSA.PublicKey)))
	eventually(t, "the good file is loaded", func() bool {
		_, err := v.Verify(context.Background(), tok)
		return err != nil
	})
	if _, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodRS256, otherRSA, "rsa-2", claims)); err != nil {
		t.Fatalf("a token of the good file's key: %v", err)
	}
}

// A token whose kid the file's set does not hold reloads the file at
// once, without waiting for the refresh, but at most once a minute.
func TestKeysFromFileReloadsForAnUnknownKid(t *testing.T) {
	testKeys(t)
	_, v, path, rec := startFileKeys(t, jwksJSON(t, rsaJWK("rsa-1", &rsaKey.PublicKey)), time.Hour)
	claims := goodClaims("u1", ScopeRead)
	writeAtomically(t, path, jwksJSON(t, rsaJWK("rsa-1", &rsaKey.PublicKey), ecJWK(t, "ec-1", &ecKey.PublicKey)))
	if _, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodES256, ecKey, "ec-1", claims)); err != nil {
		t.Fatalf("a token of a key added to the file: %v", err)
	}
	if rec.count("INFO the JWKS file changed") != 1 {
		t.Fatalf("want one change logged:\n%s", rec.all())
	}
	// Within the minute, another unknown kid does not read the file again.
	writeAtomically(t, path, jwksJSON(t, ecJWK(t, "ec-2", &ecKey.PublicKey)))
	if _, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodES256, ecKey, "ec-2", claims)); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("a second unknown kid within the minute: %v, want ErrInvalidToken", err)
	}
	if rec.count("INFO the JWKS file changed") != 1 {
		t.Fatalf("the file was reloaded again within the minute:\n%s", rec.all())
	}
}

func TestKeysFromFileFailsOnABadFileAtStart(t *testing.T) {
	dir := t.TempDir()
	if _, err := KeysFromFile(context.Background(), filepath.Join(dir, "missing.json"), time.Hour, testLogger(t)); err == nil {
		t.Fatal("a missing file was accepted")
	}
	bad := filepath.Join(dir, "bad.json")
	writeAtomically(t, bad, []byte(`{"keys":[]}`))
	if _, err := KeysFromFile(context.Background(), bad, time.Hour, testLogger(t)); err == nil {
		t.Fatal("a JWKS without keys was accepted")
	}
}
