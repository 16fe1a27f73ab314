// Package pii is personal data (email, username, display name) in one
// place: the cryptography that protects it in Kafka, the Keyring that
// follows the keys topic, and the Codec that seals and opens the records
// of the event log and the snapshot topic (see codec.go).
//
//   - The key-encryption key (KEK) comes from configuration (PII_KEK or
//     PII_KEK_FILE) and never leaves the process.
//   - Every profile has its own 32-byte data key. The data key is stored in
//     the compacted keys topic, sealed by the KEK with AES-256-GCM, with the
//     profile's uid as associated data so a sealed key cannot be moved to
//     another profile. Deleting a profile tombstones its data key: whatever
//     was encrypted with it can no longer be read (crypto-shredding).
//   - Fields are encrypted with the data key (AES-256-GCM, uid and field
//     name as associated data).
//   - Emails that serve as keys (claims, email index) are replaced by an
//     HMAC-SHA256 of the normalized email, with a key derived from the KEK
//     (HKDF-SHA256, its own label), so equal emails still meet without the
//     plaintext being stored.
package pii

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// KeySize is the size of the KEK and of every data key: AES-256.
const KeySize = 32

// Labels of the keys derived from the KEK (HKDF info). Changing one changes
// every derived value: they are part of the storage format.
const (
	labelEmailHMAC = "profiles/pii/email-hmac/v1"
	labelKeyID     = "profiles/pii/kek-id/v1"
	adDataKey      = "profiles/pii/data-key/v1\x00"
	adField        = "profiles/pii/field/v1\x00"
)

// Errors. ErrNoKey means the data needed is gone (a tombstoned data key):
// readers treat it as "erased", never as a failure. ErrKeyUnavailable
// means the key could not be read yet (the keys topic is unreachable or
// behind): it is transient, and readers retry; it never means "erased".
var (
	ErrNoKEK  = errors.New("no PII key-encryption key configured (PII_KEK or PII_KEK_FILE)")
	ErrBadKEK = errors.New("the PII key-encryption key must be 32 bytes, base64-encoded")
	ErrOpen   = errors.New("cannot open sealed PII data")
	ErrNoKey  = errors.New("the profile's data key is gone: its personal data is erased")
	// ErrKeyUnavailable: see above.
	ErrKeyUnavailable = errors.New("the profile's data key cannot be read yet")
	ErrWrongKEK       = errors.New("the data key was sealed by another key-encryption key")
)

// KEK is the key-encryption key and the keys derived from it.
type KEK struct {
	id       string
	aead     cipher.AEAD
	emailMAC []byte
	// Rand is the randomness for nonces and data keys (crypto/rand when
	// nil); tests set it to get fixed output.
	Rand io.Reader
}

// ParseKEK reads a base64 (standard or URL, padded or not) 32-byte KEK.
func ParseKEK(b64 string) (*KEK, error) {
	s := strings.TrimSpace(b64)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != KeySize {
				return nil, ErrBadKEK
			}
			return NewKEK(b)
		}
	}
	return nil, ErrBadKEK
}

// NewKEK builds a KEK from 32 raw bytes.
func NewKEK(raw []byte) (*KEK, error) {
	if len(raw) != KeySize {
		return nil, ErrBadKEK
	}
	aead, err := newGCM(raw)
	if err != nil {
		return nil, err
	}
	mac, err := hkdf.Key(sha256.New, raw, nil, labelEmailHMAC, KeySize)
	if err != nil {
		return nil, err
	}
	idKey, err := hkdf.Key(sha256.New, raw, nil, labelKeyID, 8)
	if err != nil {
		return nil, err
	}
	return &KEK{id: hex.EncodeToString(idKey), aead: aead, emailMAC: mac}, nil
}

// Load returns the KEK of the configuration: value is PII_KEK (base64),
// file is PII_KEK_FILE (a file holding the base64 KEK). Exactly one must
// be set. With neither, Load fails with ErrNoKEK unless allowDev is set, in
// which case it returns a fixed, publicly known development key (and dev
// is true): for development only, it protects nothing.
func Load(value, file string, allowDev bool) (k *KEK, dev bool, err error) {
	switch {
	case value != "" && file != "":
		return nil, false, errors.New("set PII_KEK or PII_KEK_FILE, not both")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, false, fmt.Errorf("PII_KEK_FILE: %w", err)
		}
		k, err := ParseKEK(string(b))
		return k, false, err
	case value != "":
		k, err := ParseKEK(value)
		return k, false, err
	case allowDev:
		k, err := NewKEK(devKEK[:])
		return k, true, err
	}
	return nil, false, ErrNoKEK
}

// devKEK is the key of PII_KEK_DEV=true: public, so it protects nothing.
var devKEK = sha256.Sum256([]byte("profiles development PII key - not secret"))

// Generate returns a new random KEK, base64-encoded (for PII_KEK).
func Generate() (string, error) {
	b := make([]byte, KeySize)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// ID names the KEK without revealing it (8 bytes derived by HKDF, hex).
// A sealed data key records it, so that a key sealed by another KEK is
// recognized as such.
func (k *KEK) ID() string { return k.id }

func (k *KEK) rand() io.Reader {
	if k.Rand != nil {
		return k.Rand
	}
	return rand.Reader
}

// EmailHash returns the HMAC-SHA256 (hex) of an already normalized email:
// the key of the email's claim and email index records.
func (k *KEK) EmailHash(normalized string) string {
	m := hmac.New(sha256.New, k.emailMAC)
	m.Write([]byte(normalized))
	return hex.EncodeToString(m.Sum(nil))
}

// DataKey is one profile's key for its personal data.
type DataKey struct {
	UID  string
	aead cipher.AEAD
	rnd  io.Reader
}

// NewDataKey returns a new random data key for uid.
func (k *KEK) NewDataKey(uid string) (*DataKey, []byte, error) {
	raw := make([]byte, KeySize)
	if _, err := io.ReadFull(k.rand(), raw); err != nil {
		return nil, nil, err
	}
	dk, err := k.dataKey(uid, raw)
	return dk, raw, err
}

func (k *KEK) dataKey(uid string, raw []byte) (*DataKey, error) {
	aead, err := newGCM(raw)
	if err != nil {
		return nil, err
	}
	return &DataKey{UID: uid, aead: aead, rnd: k.rand()}, nil
}

// SealedKey is the value of a record of the keys topic (keyed by uid).
type SealedKey struct {
	// V is the record format version (1).
	V int `json:"v"`
	// KEKID is KEK.ID of the KEK that sealed it.
	KEKID string `json:"kek"`
	// Sealed is nonce || AES-256-GCM(data key), with the uid as associated data.
	Sealed []byte `json:"sealed"`
}

// Seal returns the keys topic record value of uid's raw data key.
func (k *KEK) Seal(uid string, raw []byte) ([]byte, error) {
	if len(raw) != KeySize {
		return nil, errors.New("a data key is 32 bytes")
	}
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := io.ReadFull(k.rand(), nonce); err != nil {
		return nil, err
	}
	sealed := k.aead.Seal(nonce, nonce, raw, []byte(adDataKey+uid))
	return json.Marshal(SealedKey{V: 1, KEKID: k.id, Sealed: sealed})
}

// Open returns uid's data key from its keys topic record value. A nil value
// (a tombstone) is ErrNoKey.
func (k *KEK) Open(uid string, value []byte) (*DataKey, error) {
	sealed, err := k.Unwrap(uid, value)
	if err != nil {
		return nil, err
	}
	return k.OpenSealed(uid, sealed)
}

// SealedSize is the size of the sealed data key that Unwrap returns: the
// nonce, the encrypted key and the GCM tag.
const SealedSize = 12 + KeySize + 16

// Unwrap checks a keys topic record value of uid (its format, and that
// this KEK sealed it) and returns the sealed data key in it, SealedSize
// bytes, without opening it: OpenSealed opens it. A keyring keeps these,
// which take a sixteenth of the memory of an opened key. A nil value (a
// tombstone) is ErrNoKey.
func (k *KEK) Unwrap(uid string, value []byte) ([]byte, error) {
	if value == nil {
		return nil, ErrNoKey
	}
	s, ok := parseSealedKey(value)
	if !ok {
		if err := json.Unmarshal(value, &s); err != nil {
			return nil, fmt.Errorf("%w: key record of %s", ErrOpen, uid)
		}
	}
	if s.V != 1 {
		return nil, fmt.Errorf("%w: key record of %s", ErrOpen, uid)
	}
	if s.KEKID != k.id {
		return nil, fmt.Errorf("%w: key of %s sealed by %s, this KEK is %s", ErrWrongKEK, uid, s.KEKID, k.id)
	}
	if len(s.Sealed) != SealedSize || k.aead.NonceSize() != 12 {
		return nil, fmt.Errorf("%w: key record of %s", ErrOpen, uid)
	}
	return s.Sealed, nil
}

// parseSealedKey reads a key record in the exact form Seal writes,
// {"v":1,"kek":"<id>","sealed":"<base64>"}, without encoding/json: a
// keyring reads one per profile at start, and the generic decoder was most
// of a replay's CPU. ok is false for anything else, which the caller
// decodes with encoding/json.
func parseSealedKey(b []byte) (s SealedKey, ok bool) {
	const head, mid = `{"v":1,"kek":"`, `","sealed":"`
	if !bytes.HasPrefix(b, []byte(head)) || !bytes.HasSuffix(b, []byte(`"}`)) {
		return s, false
	}
	rest := b[len(head) : len(b)-2]
	i := bytes.Index(rest, []byte(mid))
	if i < 0 {
		return s, false
	}
	id, enc := rest[:i], rest[i+len(mid):]
	if bytes.ContainsAny(id, "\\\"") || bytes.ContainsAny(enc, "\\\"") {
		return s, false // escapes: not what Seal writes
	}
	sealed := make([]byte, base64.StdEncoding.DecodedLen(len(enc)))
	n, err := base64.StdEncoding.Decode(sealed, enc)
	if err != nil {
		return s, false
	}
	return SealedKey{V: 1, KEKID: string(id), Sealed: sealed[:n]}, true
}

// OpenSealed opens a sealed data key of uid that Unwrap returned.
func (k *KEK) OpenSealed(uid string, sealed []byte) (*DataKey, error) {
	n := k.aead.NonceSize()
	if len(sealed) < n {
		return nil, fmt.Errorf("%w: key record of %s", ErrOpen, uid)
	}
	raw, err := k.aead.Open(nil, sealed[:n], sealed[n:], []byte(adDataKey+uid))
	if err != nil || len(raw) != KeySize {
		return nil, fmt.Errorf("%w: key record of %s", ErrOpen, uid)
	}
	return k.dataKey(uid, raw)
}

// Encrypt returns the ciphertext of one field of the profile: base64 of
// nonce || AES-256-GCM(plaintext), with the uid and field name as
// associated data.
func (d *DataKey) Encrypt(field, plaintext string) (string, error) {
	nonce := make([]byte, d.aead.NonceSize())
	if _, err := io.ReadFull(d.rnd, nonce); err != nil {
		return "", err
	}
	ct := d.aead.Seal(nonce, nonce, []byte(plaintext), []byte(adField+d.UID+"\x00"+field))
	return base64.RawStdEncoding.EncodeToString(ct), nil
}

// Decrypt opens what Encrypt returned for the same field.
func (d *DataKey) Decrypt(field, ciphertext string) (string, error) {
	b, err := base64.RawStdEncoding.DecodeString(ciphertext)
	n := d.aead.NonceSize()
	if err != nil || len(b) < n {
		return "", fmt.Errorf("%w: field %s", ErrOpen, field)
	}
	pt, err := d.aead.Open(nil, b[:n], b[n:], []byte(adField+d.UID+"\x00"+field))
	if err != nil {
		return "", fmt.Errorf("%w: field %s", ErrOpen, field)
	}
	return string(pt), nil
}

// newGCM returns AES-256-GCM under key.
func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
