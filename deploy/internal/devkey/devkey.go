// Package devkey is the development signing key of deploy/cmd/devtoken
// and the tests: an ES256 (P-256) key pair kept in a directory, its public
// JWKS, and tokens signed with it. The private key sits unencrypted on
// disk (mode 600): it is for development and tests only.
package devkey

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"

	"github.com/golang-jwt/jwt/v5"
)

// KeyFile is the private key's file in the key directory.
const KeyFile = "signing-key.pem"

// Sign returns claims as a JWT signed with key (ES256), its kid in the
// header, so a verifier picks the key from the JWKS by it.
func Sign(key *ecdsa.PrivateKey, claims jwt.MapClaims) (string, error) {
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = KeyID(&key.PublicKey)
	return tok.SignedString(key)
}

// Load reads the key pair of dir (made by Create); a missing key is an
// fs.ErrNotExist.
func Load(dir string) (*ecdsa.PrivateKey, error) {
	raw, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(raw)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s: not a PEM PRIVATE KEY", filepath.Join(dir, KeyFile))
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, KeyFile), err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%s: not a P-256 ECDSA key", filepath.Join(dir, KeyFile))
	}
	return ec, nil
}

// Create makes a new key pair in dir (the private key with mode 600).
func Create(dir string) (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return key, WriteAtomic(filepath.Join(dir, KeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// KeyID names a public key by its hash, so a new key gets a new kid.
func KeyID(pub *ecdsa.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err) // a P-256 key always marshals
	}
	sum := sha256.Sum256(der)
	return "dev-" + hex.EncodeToString(sum[:8])
}

// PublicJWKS is the JWKS of pub alone: no private member.
func PublicJWKS(pub *ecdsa.PublicKey, kid string) ([]byte, error) {
	ecdh, err := pub.ECDH()
	if err != nil {
		return nil, err
	}
	point := ecdh.Bytes() // 0x04 || X || Y
	b64 := base64.RawURLEncoding.EncodeToString
	set := map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
		"x": b64(point[1:33]), "y": b64(point[33:65]),
	}}}
	b, err := json.MarshalIndent(set, "", "  ")
	return append(b, '\n'), err
}

// WriteAtomic writes data to path through a temporary file and a rename,
// so that a reader never sees half a file.
func WriteAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
