package app

import (
	"strings"
	"testing"
)

// byPrefix places a key by its first byte, and keys an email by itself.
type byPrefix struct{ partitions int32 }

func (b byPrefix) partitionOf(key string) int32 { return int32(key[0]) % b.partitions }
func (byPrefix) EmailKey(email string) string   { return email }

func TestColocatedUIDPlacesTheUIDWithTheEmailsClaim(t *testing.T) {
	p := byPrefix{partitions: 12}
	tests := []struct {
		name      string
		ids       string // the uids newID draws, one byte each
		email     string
		wantUID   string
		wantDraws int
	}{
		{"the first draw hits", "a", "a@x", "a", 1},
		{"later draws until one hits", "bcda", "a@x", "a", 4},
		{"none hits: the last draw", strings.Repeat("b", maxColocationDraws+5), "a@x", "b", maxColocationDraws},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			draws := 0
			newID := func() string { draws++; return tt.ids[draws-1 : draws] }
			got := ColocatedUID(newID, p.partitionOf, p)(tt.email)
			if got != tt.wantUID || draws != tt.wantDraws {
				t.Fatalf("uid %q after %d draws, want %q after %d", got, draws, tt.wantUID, tt.wantDraws)
			}
		})
	}
}
