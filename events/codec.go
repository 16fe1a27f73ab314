package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ErrDecode is returned (wrapped) by Decode for any record that is not a
// valid event: bad JSON, an unknown type, an unsupported schema version or a
// missing field. A consumer that gets it must skip (or dead-letter) the
// record rather than stall on it.
var ErrDecode = errors.New("cannot decode event")

// envelope is the JSON form of an Event in the event log.
type envelope struct {
	ID            string    `json:"id"`
	Type          Type      `json:"type"`
	UID           string    `json:"uid"`
	Version       int64     `json:"version"`
	OccurredAt    time.Time `json:"occurredAt"`
	SchemaVersion int       `json:"schemaVersion"`
	// PII is SealedPII when the payload's personal fields are encrypted
	// (schema version 3 and later), empty when they are in clear.
	PII  string          `json:"pii,omitempty"`
	Data json.RawMessage `json:"data"`
}

// Encode returns the JSON envelope of e as it is stored. e.SchemaVersion
// must be SchemaVersion (as New sets it): the payload types are those of
// the current version, and a record marked older would be upcast again on
// read. When e is Sealed, its personal fields must already be ciphertext
// (pii.Codec.EncodeEvent seals them): the record is marked SealedPII.
func Encode(e Event) ([]byte, error) {
	if e.Data == nil || e.Data.EventType() != e.Type {
		return nil, fmt.Errorf("%w: payload does not match type %q", ErrInvalidEvent, e.Type)
	}
	if e.SchemaVersion != SchemaVersion {
		return nil, fmt.Errorf("%w: schema version %d, this build writes %d", ErrInvalidEvent, e.SchemaVersion, SchemaVersion)
	}
	mark := ""
	if e.Sealed {
		mark = SealedPII
	}
	data, err := json.Marshal(e.Data)
	if err != nil {
		return nil, fmt.Errorf("encode %s payload: %w", e.Type, err)
	}
	return json.Marshal(envelope{
		PII:           mark,
		ID:            e.ID,
		Type:          e.Type,
		UID:           e.UID,
		Version:       e.Version,
		OccurredAt:    e.OccurredAt,
		SchemaVersion: e.SchemaVersion,
		Data:          data,
	})
}

// Decode parses a JSON envelope written by Encode, by this or any earlier
// schema version. A record of an earlier version is first upcast to
// SchemaVersion (see upcast.go), so the event it returns always has the
// current payload types and SchemaVersion, whatever version the record was
// written in. Errors wrap ErrDecode; a future schema version is one, and
// so is an unknown "pii" scheme. A sealed record (marked SealedPII)
// decodes as stored: Sealed is set and its personal fields are still
// ciphertext (pii.Codec.DecodeEvent opens them).
func Decode(b []byte) (Event, error) {
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrDecode, err)
	}
	switch {
	case env.ID == "" || env.UID == "":
		return Event{}, fmt.Errorf("%w: missing id or uid", ErrDecode)
	case env.Version < 1:
		return Event{}, fmt.Errorf("%w: version %d", ErrDecode, env.Version)
	}
	env, err := upcast(env)
	if err != nil {
		return Event{}, err
	}
	var data Payload
	switch env.Type {
	case TypeProfileCreated:
		data, err = decodeData[ProfileCreated](env.Data)
	case TypeUsernameChanged:
		data, err = decodeData[UsernameChanged](env.Data)
	case TypeEmailChanged:
		data, err = decodeData[EmailChanged](env.Data)
	case TypeProfileDeleted:
		data, err = decodeData[ProfileDeleted](env.Data)
	default:
		return Event{}, fmt.Errorf("%w: unknown type %q", ErrDecode, env.Type)
	}
	if err != nil {
		return Event{}, fmt.Errorf("%w: %s payload: %v", ErrDecode, env.Type, err)
	}
	if env.PII != "" && env.PII != SealedPII {
		return Event{}, fmt.Errorf("%w: unknown pii scheme %q", ErrDecode, env.PII)
	}
	return Event{
		Sealed:        env.PII != "",
		ID:            env.ID,
		Type:          env.Type,
		UID:           env.UID,
		Version:       env.Version,
		OccurredAt:    env.OccurredAt,
		SchemaVersion: env.SchemaVersion,
		Data:          data,
	}, nil
}

func decodeData[T Payload](raw json.RawMessage) (T, error) {
	var v T
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return v, nil
	}
	err := json.Unmarshal(raw, &v)
	return v, err
}

// CloudEvents Kafka binding (binary content mode) header names.
const (
	HeaderID          = "ce_id"
	HeaderType        = "ce_type"
	HeaderSource      = "ce_source"
	HeaderSpecVersion = "ce_specversion"
	HeaderTime        = "ce_time"
	HeaderSubject     = "ce_subject"
	HeaderContentType = "content-type"
)

// Headers returns the CloudEvents headers for e, so that other consumers can
// route the record without parsing its value. source identifies the writer,
// for example "/command-svc".
func Headers(e Event, source string) map[string]string {
	return map[string]string{
		HeaderID:          e.ID,
		HeaderType:        string(e.Type),
		HeaderSource:      source,
		HeaderSpecVersion: "1.0",
		HeaderTime:        e.OccurredAt.UTC().Format(time.RFC3339Nano),
		HeaderSubject:     e.UID,
		HeaderContentType: "application/json",
	}
}
