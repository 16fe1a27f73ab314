package pii

import (
	"bytes"
	"fmt"
	"testing"
)

func TestParseUUIDTakesOnlyTheCanonicalForm(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{name: "canonical lowercase", in: "74292b21-0fbb-4f1d-a18f-fa80f947fa5d", ok: true},
		{name: "uppercase is another string", in: "74292B21-0FBB-4F1D-A18F-FA80F947FA5D"},
		{name: "no dashes", in: "74292b210fbb4f1da18ffa80f947fa5d"},
		{name: "dash moved", in: "74292b2-10fbb-4f1d-a18f-fa80f947fa5d"},
		{name: "not hex", in: "74292b21-0fbb-4f1d-a18f-fa80f947fa5g"},
		{name: "empty", in: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, ok := parseUUID(tt.in)
			if ok != tt.ok {
				t.Fatalf("parseUUID(%q) ok = %v, want %v", tt.in, ok, tt.ok)
			}
			if ok && id != [16]byte{0x74, 0x29, 0x2b, 0x21, 0x0f, 0xbb, 0x4f, 0x1d, 0xa1, 0x8f, 0xfa, 0x80, 0xf9, 0x47, 0xfa, 0x5d} {
				t.Fatalf("parseUUID(%q) = %x", tt.in, id)
			}
		})
	}
}

func TestKeyStoreKeepsEveryKeyAcrossChunksAndTombstones(t *testing.T) {
	s := newKeyStore()
	uid := func(i int) string {
		if i%3 == 0 {
			return fmt.Sprintf("legacy-%d", i) // not a UUID: a string key
		}
		return fmt.Sprintf("00000000-0000-4000-8000-%012x", i)
	}
	sealed := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, SealedSize) }
	const n = 3*chunkKeys + 7
	seen := map[string]int{}
	for i := range n {
		u := uid(i)
		s.add(u, sealed(i))
		seen[u] = i
	}
	if len(s.ids) != n-n/3-1 || len(s.names) != n/3+1 {
		t.Fatalf("%d UUID keys and %d string keys", len(s.ids), len(s.names))
	}
	for u, i := range seen {
		ref, ok := s.get(u)
		if !ok || ref < refFirst || !bytes.Equal(s.sealed(ref), sealed(i)) {
			t.Fatalf("%s: ref %d, ok %v; want the sealed key of record %d", u, ref, ok, i)
		}
	}
	s.setRef(uid(0), refGone)
	if ref, ok := s.get(uid(0)); !ok || ref != refGone {
		t.Fatalf("tombstoned: ref %d, ok %v", ref, ok)
	}
	if _, ok := s.get("00000000-0000-4000-8000-ffffffffffff"); ok {
		t.Fatal("a uid never stored is known")
	}
}
