package events

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Claim is the record of the email claims topic, keyed by the normalized
// email: which profile holds the email. A claim is written before the
// event that gives the profile the email, and removed (a tombstone) after
// the event that takes it away.
//
// A claim whose profile does not hold the email (it crashed between the
// claim and the event, or it let the email go without removing the claim)
// is stale: once older than the claim lease it may be taken over.
type Claim struct {
	UID       string    `json:"uid"`
	ClaimedAt time.Time `json:"claimedAt"`
	// Seq orders the claims of one email: every write is one more than the
	// last, so a reader never moves a claim back in time.
	Seq int64 `json:"seq"`
	// Released marks a removed claim (a tombstone).
	Released bool `json:"-"`
}

// HeaderSeq carries a claim record's Seq, which a tombstone has nowhere else.
const HeaderSeq = "claim-seq"

// EncodeClaim returns the record value of c: nil (a tombstone) when released.
func EncodeClaim(c Claim) ([]byte, error) {
	if c.Released {
		return nil, nil
	}
	return json.Marshal(c)
}

// DecodeClaim parses a claim record; a nil value is a released claim whose
// Seq comes from the HeaderSeq header.
func DecodeClaim(value []byte, seqHeader string) (Claim, error) {
	if value == nil {
		seq, _ := strconv.ParseInt(seqHeader, 10, 64)
		return Claim{Seq: seq, Released: true}, nil
	}
	var c Claim
	if err := json.Unmarshal(value, &c); err != nil || c.UID == "" {
		return Claim{}, fmt.Errorf("%w: claim %q: %v", ErrSnapshot, value, err)
	}
	return c, nil
}
