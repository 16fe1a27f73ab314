package pii

import (
	"errors"
	"fmt"

	"profiles/events"
)

// Personal data in events and snapshots.
//
// The personal fields (username, displayName, email) of an event written by
// Codec.EncodeEvent, and of a Sealed snapshot written by
// Codec.EncodeSnapshot, are encrypted with the profile's data key, and the
// record says so: the envelope's or the snapshot's "pii" field is
// events.SealedPII. Codec.DecodeEvent and Codec.DecodeSnapshot open them
// with the codec's Keys. When the profile's key is gone (its delete
// tombstoned it: the data is crypto-shredded), the record decodes without
// error, with the personal fields empty and Erased set: a reader never
// fails, and never dead-letters a record, because its data was erased.

// Keys gives the data keys of profiles; a Keyring follows the keys topic.
// A Codec calls it from any goroutine that decodes or encodes, so an
// implementation must be safe for concurrent use.
type Keys interface {
	// DataKey returns uid's data key, or an error wrapping ErrNoKey when
	// the profile has none (its delete tombstoned it). Any other error
	// means the key cannot be read yet (ErrKeyUnavailable): the record
	// that needs it is retried, never taken for erased or poison.
	DataKey(uid string) (*DataKey, error)
	// Forget drops uid's key from any cache: its profile was deleted.
	Forget(uid string)
}

// Codec reads and writes the records of the event log and the snapshot
// topic with their personal data sealed, and keys emails by their HMAC
// (EmailKey, an events.EmailKeyer). Every binary builds one, after its
// keyring, and passes it to each reader and writer.
//
// A Codec is immutable and safe for concurrent use when its Keys are. The
// zero value and a nil *Codec are not usable: build one with NewCodec.
type Codec struct {
	kek  *KEK
	keys Keys
}

// NewCodec returns the codec of kek and keys. kek must not be nil: it keys
// the emails. keys may be nil (tests and tools that read no sealed data):
// then no profile has a key, so sealed records decode as erased and
// EncodeSnapshot writes a Sealed profile as it is, unsealed.
func NewCodec(kek *KEK, keys Keys) *Codec {
	if kek == nil {
		panic("pii.NewCodec: nil KEK")
	}
	return &Codec{kek: kek, keys: keys}
}

// EmailKey returns what stands for an email wherever an email is a key
// (the claims topic, the email index, the partition of either): the
// HMAC-SHA256 of its normalized form (events.NormalizeEmail) under a key
// derived from the KEK, so equal addresses meet without the address being
// stored.
func (c *Codec) EmailKey(email string) string {
	return c.kek.EmailHash(events.NormalizeEmail(email))
}

// EncodeEvent returns the record of e with the personal fields of its
// payload encrypted with the profile's data key dk, marked
// events.SealedPII. command-svc writes every event so. dk must be e.UID's
// key; errors wrap events.ErrInvalidEvent for an invalid event or key.
func (c *Codec) EncodeEvent(e events.Event, dk *DataKey) ([]byte, error) {
	if dk == nil || dk.UID != e.UID {
		return nil, fmt.Errorf("%w: no data key of %s", events.ErrInvalidEvent, e.UID)
	}
	if e.Data == nil || e.Data.EventType() != e.Type || e.SchemaVersion != events.SchemaVersion {
		return events.Encode(e) // the error of an invalid event
	}
	data, err := events.EditPayloadPersonal(e.Data, func(fields []events.PersonalField) error { return seal(dk, fields) })
	if err != nil {
		return nil, fmt.Errorf("seal %s payload: %w", e.Type, err)
	}
	e.Data, e.Sealed = data, true
	return events.Encode(e)
}

// DecodeEvent is events.Decode with the personal fields of a sealed record
// opened with the profile's key, or emptied (Erased set) when the key is
// gone. Errors wrap events.ErrDecode, but for a sealed record whose data
// key cannot be read yet: that error wraps ErrKeyUnavailable and not
// events.ErrDecode, and the caller retries the record. A ProfileDeleted
// makes the codec Forget the profile's key: the delete's transaction
// tombstoned it.
func (c *Codec) DecodeEvent(b []byte) (events.Event, error) {
	e, err := events.Decode(b)
	if err != nil {
		return events.Event{}, err
	}
	if e.Sealed {
		var erased bool
		e.Data, err = events.EditPayloadPersonal(e.Data, func(fields []events.PersonalField) (err error) {
			erased, err = c.open(e.UID, fields)
			return err
		})
		if errors.Is(err, ErrKeyUnavailable) {
			return events.Event{}, fmt.Errorf("%s payload of %s: %w", e.Type, e.UID, err)
		}
		if err != nil {
			return events.Event{}, fmt.Errorf("%w: %s payload: %v", events.ErrDecode, e.Type, err)
		}
		e.Erased = erased
	}
	if e.Type == events.TypeProfileDeleted && c.keys != nil {
		c.keys.Forget(e.UID)
	}
	return e, nil
}

// EncodeSnapshot is events.EncodeSnapshot with the personal fields of a
// Sealed profile (folded from sealed records) encrypted with the profile's
// data key. A profile that is not Sealed (from before encryption), or one
// whose key is gone (erased, its fields empty), is written as it is,
// unmarked. An error wrapping ErrKeyUnavailable means the key cannot be
// read yet: the caller retries.
func (c *Codec) EncodeSnapshot(p events.Profile) ([]byte, error) {
	if p.Deleted || !p.Sealed {
		return events.EncodeSnapshot(p)
	}
	dk, ok, err := c.dataKey(p.UID)
	if err != nil {
		return nil, fmt.Errorf("data key of %s: %w", p.UID, err)
	}
	if !ok {
		p.Sealed = false
		return events.EncodeSnapshot(p)
	}
	p, err = events.EditProfilePersonal(p, func(fields []events.PersonalField) error { return seal(dk, fields) })
	if err != nil {
		return nil, fmt.Errorf("seal snapshot of %s: %w", p.UID, err)
	}
	return events.EncodeSnapshot(p)
}

// DecodeSnapshot is events.DecodeSnapshot with the personal fields of a
// sealed record opened with the profile's key, or emptied (Erased set)
// when the key is gone. Errors wrap events.ErrSnapshot, but for a sealed
// record whose data key cannot be read yet (ErrKeyUnavailable, not
// events.ErrSnapshot), which the caller retries. A tombstone is no reason
// to forget the key: the email index tombstones an entry whenever a live
// profile changes its email.
func (c *Codec) DecodeSnapshot(uid string, value []byte, versionHeader string) (events.Profile, error) {
	p, err := events.DecodeSnapshot(uid, value, versionHeader)
	if err != nil || !p.Sealed {
		return p, err
	}
	var erased bool
	p, err = events.EditProfilePersonal(p, func(fields []events.PersonalField) (err error) {
		erased, err = c.open(uid, fields)
		return err
	})
	if errors.Is(err, ErrKeyUnavailable) {
		return events.Profile{}, fmt.Errorf("snapshot of %s: %w", uid, err) // transient: retried
	}
	if err != nil {
		return events.Profile{}, fmt.Errorf("%w: %v", events.ErrSnapshot, err)
	}
	p.Erased = erased
	return p, nil
}

// dataKey returns uid's key from the codec's Keys; ok is false when there
// is none (no Keys, or the key is gone). Any other failure wraps
// ErrKeyUnavailable.
func (c *Codec) dataKey(uid string) (dk *DataKey, ok bool, err error) {
	if c.keys == nil {
		return nil, false, nil
	}
	dk, err = c.keys.DataKey(uid)
	if errors.Is(err, ErrNoKey) {
		return nil, false, nil
	}
	if err != nil {
		if !errors.Is(err, ErrKeyUnavailable) {
			err = fmt.Errorf("%w: %w", ErrKeyUnavailable, err)
		}
		return nil, false, err
	}
	return dk, true, nil
}

// seal encrypts every non-empty field in place.
func seal(dk *DataKey, fields []events.PersonalField) error {
	for _, f := range fields {
		if *f.Value == "" {
			continue
		}
		ct, err := dk.Encrypt(f.Name, *f.Value)
		if err != nil {
			return err
		}
		*f.Value = ct
	}
	return nil
}

// open decrypts every non-empty field in place with uid's key; when the
// key is gone it empties them and reports erased.
func (c *Codec) open(uid string, fields []events.PersonalField) (erased bool, err error) {
	dk, ok, err := c.dataKey(uid)
	if err != nil {
		return false, err
	}
	for _, f := range fields {
		if *f.Value == "" {
			continue
		}
		if !ok {
			*f.Value = ""
			continue
		}
		pt, err := dk.Decrypt(f.Name, *f.Value)
		if err != nil {
			return false, fmt.Errorf("field %s of %s: %w", f.Name, uid, err)
		}
		*f.Value = pt
	}
	return !ok, nil
}
