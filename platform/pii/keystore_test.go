package pii

import (
	"bytes"
	"fmt"
	"log/slog"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
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

// Both keyStores keep every key, across memKeys' chunks, tombstones and
// forgets, and the next offset of each partition; the Pebble one keeps
// them across a reopen, and a store of another origin reads as empty.
func TestKeyStoresKeepEveryKeyTombstonesAndOffsets(t *testing.T) {
	fs := vfs.NewMem()
	open := func(origin string) keyStore {
		t.Helper()
		s, err := openDiskKeys("keys", KeyStoreOptions{Dir: "keys", FS: fs, Origin: origin}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	uid := func(i int) string {
		if i%3 == 0 {
			return fmt.Sprintf("legacy-%d", i) // not a UUID: a string key of memKeys
		}
		return fmt.Sprintf("00000000-0000-4000-8000-%012x", i)
	}
	sealed := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, SealedSize) }
	const n = 3*chunkKeys + 7
	check := func(t *testing.T, s keyStore) {
		t.Helper()
		for i := range n {
			got, gone, known, err := s.lookup(uid(i))
			switch {
			case err != nil:
				t.Fatal(err)
			case i == 5 || i == 9: // tombstoned, forgotten
				if !known || !gone || got != nil {
					t.Fatalf("%s: %x, gone %v, known %v; want gone", uid(i), got, gone, known)
				}
			case !known || gone || !bytes.Equal(got, sealed(i)):
				t.Fatalf("%s: %x, gone %v, known %v; want the sealed key of record %d", uid(i), got, gone, known, i)
			}
		}
		if _, _, known, err := s.lookup("00000000-0000-4000-8000-ffffffffffff"); known || err != nil {
			t.Fatalf("a uid never stored: known %v, %v", known, err)
		}
		next, err := s.offsets()
		if err != nil || len(next) != 2 || next[0] != 100 || next[1] != int64(n) {
			t.Fatalf("offsets %v, %v; want partition 0 at 100, 1 at %d", next, err, n)
		}
	}
	for _, tt := range []struct {
		name  string
		store func() keyStore
	}{
		{"memory", func() keyStore { return newMemKeys() }},
		{"pebble", func() keyStore { return open("cluster-a keys kek-1") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.store()
			var recs []keyRecord
			for i := range n {
				recs = append(recs, keyRecord{uid: uid(i), sealed: sealed(i)})
			}
			recs = append(recs, keyRecord{uid: uid(5)}) // a tombstone after its key
			if err := s.write(1, recs[:chunkKeys], chunkKeys); err != nil {
				t.Fatal(err)
			}
			if err := s.write(1, recs[chunkKeys:], int64(n)); err != nil {
				t.Fatal(err)
			}
			if err := s.write(0, nil, 100); err != nil {
				t.Fatal(err)
			}
			if err := s.forget(uid(9)); err != nil {
				t.Fatal(err)
			}
			check(t, s)
			if err := s.close(); err != nil {
				t.Fatal(err)
			}
			if tt.name != "pebble" {
				return
			}
			s = open("cluster-a keys kek-1")
			check(t, s)
			if err := s.close(); err != nil {
				t.Fatal(err)
			}
			s = open("cluster-b keys kek-1")
			defer s.close()
			if next, err := s.offsets(); err != nil || len(next) != 0 {
				t.Fatalf("a store of another origin has offsets %v, %v", next, err)
			}
			if _, _, known, _ := s.lookup(uid(1)); known {
				t.Fatal("a store of another origin still knows a key")
			}
		})
	}
}
