package events

import (
	"errors"
	"fmt"
	"sync/atomic"

	"profiles/events/pii"
)

// Personal data in events and snapshots.
//
// The personal fields (username, displayName, email) of an event written by
// EncodeSealed, and of a snapshot written by EncodeSnapshot while Keys are
// installed, are encrypted with the profile's data key (see package pii),
// and the record says so: the envelope's or the snapshot's "pii" field is
// SealedPII. Decode and DecodeSnapshot open them with the installed Keys.
// When the profile's key is gone (its delete tombstoned it: the data is
// crypto-shredded), the record decodes without error, with the personal
// fields empty and Erased set: a reader never fails, and never
// dead-letters a record, because its data was erased.

// ErrKeyUnavailable is pii.ErrKeyUnavailable. Decode and DecodeSnapshot
// return it (wrapped) for a sealed record whose data key cannot be read
// yet. It is transient: the caller retries the record later; it is never a
// reason to skip or dead-letter it, and never means "erased".
var ErrKeyUnavailable = pii.ErrKeyUnavailable

// SealedPII marks a record whose personal fields are encrypted with
// AES-256-GCM under the profile's data key.
const SealedPII = "aes-256-gcm/v1"

// Keys gives the data keys of profiles; a kafkax.Keyring follows the keys
// topic.
type Keys interface {
	// DataKey returns uid's data key, or an error wrapping pii.ErrNoKey
	// when the profile has none (its delete tombstoned it). Any other
	// error means the key cannot be read yet (pii.ErrKeyUnavailable): the
	// record that needs it is retried, never taken for erased or poison.
	DataKey(uid string) (*pii.DataKey, error)
	// Forget drops uid's key from any cache: its profile was deleted.
	Forget(uid string)
}

type keysHolder struct{ Keys }

var installed atomic.Pointer[keysHolder]

// SetKeys installs the process's Keys, before any record is decoded; nil
// removes them. Without Keys, sealed records decode as erased and
// EncodeSnapshot writes personal data in clear (tests and tools only:
// every service installs its keyring at start).
func SetKeys(k Keys) {
	if k == nil {
		installed.Store(nil)
		return
	}
	installed.Store(&keysHolder{k})
}

func currentKeys() Keys {
	if h := installed.Load(); h != nil {
		return h.Keys
	}
	return nil
}

// dataKey returns uid's key from the installed Keys; ok is false when
// there is none (no Keys installed, or the key is gone).
func dataKey(uid string) (dk *pii.DataKey, ok bool, err error) {
	k := currentKeys()
	if k == nil {
		return nil, false, nil
	}
	dk, err = k.DataKey(uid)
	if errors.Is(err, pii.ErrNoKey) {
		return nil, false, nil
	}
	if err != nil {
		if !errors.Is(err, pii.ErrKeyUnavailable) {
			err = fmt.Errorf("%w: %w", pii.ErrKeyUnavailable, err)
		}
		return nil, false, err
	}
	return dk, true, nil
}

func forget(uid string) {
	if k := currentKeys(); k != nil {
		k.Forget(uid)
	}
}

// personal lists the personal fields of a payload or profile, by the names
// they are encrypted under.
func personal(username, displayName, email *string) map[string]*string {
	out := map[string]*string{}
	if username != nil {
		out["username"] = username
	}
	if displayName != nil {
		out["displayName"] = displayName
	}
	if email != nil {
		out["email"] = email
	}
	return out
}

// sealPayload returns d with its personal fields encrypted with dk.
func sealPayload(dk *pii.DataKey, d Payload) (Payload, error) {
	switch v := d.(type) {
	case ProfileCreated:
		return v, seal(dk, personal(&v.Username, &v.DisplayName, &v.Email))
	case UsernameChanged:
		return v, seal(dk, personal(&v.Username, nil, nil))
	case EmailChanged:
		return v, seal(dk, personal(nil, nil, &v.Email))
	}
	return d, nil
}

// openPayload returns d with its personal fields decrypted with uid's
// installed key, or emptied (erased) when the key is gone.
func openPayload(uid string, d Payload) (Payload, bool, error) {
	switch v := d.(type) {
	case ProfileCreated:
		erased, err := open(uid, personal(&v.Username, &v.DisplayName, &v.Email))
		return v, erased, err
	case UsernameChanged:
		erased, err := open(uid, personal(&v.Username, nil, nil))
		return v, erased, err
	case EmailChanged:
		erased, err := open(uid, personal(nil, nil, &v.Email))
		return v, erased, err
	}
	return d, false, nil
}

// seal encrypts every non-empty field in place.
func seal(dk *pii.DataKey, fields map[string]*string) error {
	for name, f := range fields {
		if *f == "" {
			continue
		}
		ct, err := dk.Encrypt(name, *f)
		if err != nil {
			return err
		}
		*f = ct
	}
	return nil
}

// open decrypts every non-empty field in place with uid's installed key;
// when the key is gone it empties them and reports erased.
func open(uid string, fields map[string]*string) (erased bool, err error) {
	dk, ok, err := dataKey(uid)
	if err != nil {
		return false, err
	}
	for name, f := range fields {
		if *f == "" {
			continue
		}
		if !ok {
			*f = ""
			continue
		}
		pt, err := dk.Decrypt(name, *f)
		if err != nil {
			return false, fmt.Errorf("field %s of %s: %w", name, uid, err)
		}
		*f = pt
	}
	return !ok, nil
}
