package pii

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testKEK is a fixed KEK: bytes 0..31.
func testKEK(t *testing.T) *KEK {
	t.Helper()
	raw := make([]byte, KeySize)
	for i := range raw {
		raw[i] = byte(i)
	}
	k, err := ParseKEK(base64.StdEncoding.EncodeToString(raw))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// counter is a deterministic randomness source.
type counter struct{ n byte }

func (c *counter) Read(p []byte) (int, error) {
	for i := range p {
		c.n++
		p[i] = c.n
	}
	return len(p), nil
}

func TestParseKEKRejectsWrongSizesAndGarbage(t *testing.T) {
	for _, s := range []string{"", "not base64!", base64.StdEncoding.EncodeToString(make([]byte, 16)), base64.StdEncoding.EncodeToString(make([]byte, 33))} {
		if _, err := ParseKEK(s); !errors.Is(err, ErrBadKEK) {
			t.Errorf("ParseKEK(%q) = %v, want ErrBadKEK", s, err)
		}
	}
	raw := make([]byte, KeySize)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if _, err := ParseKEK(enc.EncodeToString(raw) + "\n"); err != nil {
			t.Errorf("ParseKEK: %v", err)
		}
	}
}

func TestLoadRefusesToRunWithoutAKEKUnlessDev(t *testing.T) {
	if _, _, err := Load("", "", false); !errors.Is(err, ErrNoKEK) {
		t.Fatalf("Load without a KEK = %v, want ErrNoKEK", err)
	}
	k, dev, err := Load("", "", true)
	if err != nil || !dev || k == nil {
		t.Fatalf("dev Load = %v %v %v", k, dev, err)
	}
	gen, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(file, []byte(gen+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fromFile, dev, err := Load("", file, true)
	if err != nil || dev {
		t.Fatalf("Load(file) = %v %v", dev, err)
	}
	fromValue, _, err := Load(gen, "", false)
	if err != nil || fromValue.ID() != fromFile.ID() || fromValue.ID() == k.ID() {
		t.Fatalf("Load(value) = %v; ids %s %s dev %s", err, fromValue.ID(), fromFile.ID(), k.ID())
	}
	if _, _, err := Load(gen, file, false); err == nil {
		t.Fatal("Load accepted both PII_KEK and PII_KEK_FILE")
	}
}

func TestEmailHashIsHMACSHA256WithAnHKDFDerivedKey(t *testing.T) {
	k := testKEK(t)
	raw := make([]byte, KeySize)
	for i := range raw {
		raw[i] = byte(i)
	}
	macKey, err := hkdf.Key(sha256.New, raw, nil, "profiles/pii/email-hmac/v1", 32)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, macKey)
	m.Write([]byte("bob@mail.com"))
	want := hex.EncodeToString(m.Sum(nil))
	if got := k.EmailHash("bob@mail.com"); got != want {
		t.Fatalf("EmailHash = %s, want %s", got, want)
	}
	if bytes.Equal(macKey, raw) {
		t.Fatal("the HMAC key is the KEK itself")
	}
	if k.EmailHash("bob@mail.com") == k.EmailHash("bob2@mail.com") {
		t.Fatal("two emails hash the same")
	}
	other, _ := NewKEK(bytes.Repeat([]byte{7}, KeySize))
	if other.EmailHash("bob@mail.com") == want {
		t.Fatal("another KEK gives the same hash")
	}
	if strings.Contains(want, "bob") || len(want) != 64 {
		t.Fatalf("hash %q", want)
	}
}

func TestSealedDataKeysOpenOnlyForTheirUIDAndKEK(t *testing.T) {
	k := testKEK(t)
	k.Rand = &counter{}
	dk, raw, err := k.NewDataKey("uid-1")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := k.Seal("uid-1", raw)
	if err != nil {
		t.Fatal(err)
	}
	// Deterministic with a fixed randomness source.
	k2 := testKEK(t)
	k2.Rand = &counter{}
	_, raw2, _ := k2.NewDataKey("uid-1")
	rec2, _ := k2.Seal("uid-1", raw2)
	if !bytes.Equal(rec, rec2) {
		t.Fatalf("sealing is not deterministic with a fixed source:\n%s\n%s", rec, rec2)
	}
	if bytes.Contains(rec, raw) {
		t.Fatal("the record holds the raw data key")
	}
	opened, err := k.Open("uid-1", rec)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := dk.Encrypt("email", "bob@mail.com")
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := opened.Decrypt("email", ct); err != nil || pt != "bob@mail.com" {
		t.Fatalf("Decrypt = %q, %v", pt, err)
	}
	if _, err := k.Open("uid-2", rec); !errors.Is(err, ErrOpen) {
		t.Fatalf("Open under another uid = %v, want ErrOpen", err)
	}
	other, _ := NewKEK(bytes.Repeat([]byte{7}, KeySize))
	if _, err := other.Open("uid-1", rec); !errors.Is(err, ErrWrongKEK) {
		t.Fatalf("Open with another KEK = %v, want ErrWrongKEK", err)
	}
	if _, err := k.Open("uid-1", nil); !errors.Is(err, ErrNoKey) {
		t.Fatalf("Open(tombstone) = %v, want ErrNoKey", err)
	}
	if _, err := k.Open("uid-1", []byte("{")); !errors.Is(err, ErrOpen) {
		t.Fatalf("Open(garbage) = %v, want ErrOpen", err)
	}
}

func TestFieldsAreBoundToTheirProfileAndField(t *testing.T) {
	k := testKEK(t)
	k.Rand = &counter{}
	dk, raw, _ := k.NewDataKey("uid-1")
	ct, err := dk.Encrypt("email", "Bob@Mail.com")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.ToLower(ct), "bob") {
		t.Fatalf("ciphertext %q shows the plaintext", ct)
	}
	if _, err := dk.Decrypt("username", ct); !errors.Is(err, ErrOpen) {
		t.Fatalf("Decrypt as another field = %v", err)
	}
	moved, _ := k.dataKey("uid-2", raw)
	if _, err := moved.Decrypt("email", ct); !errors.Is(err, ErrOpen) {
		t.Fatalf("Decrypt under another uid = %v", err)
	}
	if _, err := dk.Decrypt("email", "!!"); !errors.Is(err, ErrOpen) {
		t.Fatalf("Decrypt(garbage) = %v", err)
	}
	ct2, _ := dk.Encrypt("email", "Bob@Mail.com")
	if ct == ct2 {
		t.Fatal("two encryptions of one value are equal: the nonce repeats")
	}
}

// Unwrap's fast path reads exactly what Seal writes, and anything else
// still goes through encoding/json.
func TestUnwrapReadsSealedRecordsWithAndWithoutTheFastPath(t *testing.T) {
	k, err := NewKEK(bytes.Repeat([]byte{5}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	_, raw, err := k.NewDataKey("u-1")
	if err != nil {
		t.Fatal(err)
	}
	record, err := k.Seal("u-1", raw)
	if err != nil {
		t.Fatal(err)
	}
	var want SealedKey
	if err := json.Unmarshal(record, &want); err != nil {
		t.Fatal(err)
	}
	if got, ok := parseSealedKey(record); !ok || got.V != 1 || got.KEKID != want.KEKID || !bytes.Equal(got.Sealed, want.Sealed) {
		t.Fatalf("parseSealedKey(%s) = %+v, %v; want %+v", record, got, ok, want)
	}
	reordered, _ := json.Marshal(map[string]any{"sealed": want.Sealed, "kek": want.KEKID, "v": 1})
	if _, ok := parseSealedKey(reordered); ok {
		t.Fatalf("the fast path took another field order: %s", reordered)
	}
	for name, value := range map[string][]byte{"as Seal writes it": record, "fields reordered": reordered} {
		sealed, err := k.Unwrap("u-1", value)
		if err != nil || !bytes.Equal(sealed, want.Sealed) {
			t.Fatalf("%s: Unwrap = %x, %v", name, sealed, err)
		}
		if _, err := k.OpenSealed("u-1", sealed); err != nil {
			t.Fatalf("%s: OpenSealed: %v", name, err)
		}
	}
	for name, value := range map[string][]byte{
		"bad base64":  bytes.Replace(record, []byte(`"sealed":"`), []byte(`"sealed":"!`), 1),
		"version 2":   bytes.Replace(record, []byte(`{"v":1`), []byte(`{"v":2`), 1),
		"cut short":   record[:len(record)-5],
		"another KEK": bytes.Replace(record, []byte(`"kek":"`), []byte(`"kek":"x`), 1),
	} {
		if _, err := k.Unwrap("u-1", value); err == nil {
			t.Fatalf("%s: Unwrap accepted %s", name, value)
		}
	}
}
