package projection

import "profiles/events"

// LegacyCodec is the Codec of the process-global keys (events.SetKeys):
// EncodeSnapshot is events.EncodeSnapshot, and EmailKey is Key, or the
// normalized email when Key is nil.
//
// MERGE: a stand-in until *pii.Codec exists; replace every use with the
// binary's *pii.Codec and delete this file.
type LegacyCodec struct {
	Key func(email string) string
}

// EncodeSnapshot is events.EncodeSnapshot.
func (LegacyCodec) EncodeSnapshot(p events.Profile) ([]byte, error) { return events.EncodeSnapshot(p) }

// EmailKey returns c.Key(email), or the normalized email when Key is nil.
func (c LegacyCodec) EmailKey(email string) string {
	if c.Key == nil {
		return events.NormalizeEmail(email)
	}
	return c.Key(email)
}
