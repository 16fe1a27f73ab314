package kafkax

import (
	"testing"

	"github.com/IBM/sarama"
)

func TestKeyedMarshaler(t *testing.T) {
	tests := []struct {
		name          string
		key           string
		payload       []byte
		wantKey       sarama.Encoder
		wantTombstone bool
	}{
		{"the key metadata is the record key", "uid-1", []byte("v"), sarama.StringEncoder("uid-1"), false},
		{"a nil payload is a tombstone", "uid-1", nil, sarama.StringEncoder("uid-1"), true},
		{"no key metadata is no key", "", []byte("v"), nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := NewKeyedMessage("id", tt.key, map[string]string{"h": "1"}, tt.payload)
			pm, err := keyedMarshaler{}.Marshal("topic", msg)
			if err != nil {
				t.Fatal(err)
			}
			if pm.Key != tt.wantKey {
				t.Fatalf("key %v, want %v", pm.Key, tt.wantKey)
			}
			if (pm.Value == nil) != tt.wantTombstone {
				t.Fatalf("value %v, tombstone wanted: %v", pm.Value, tt.wantTombstone)
			}
			for _, h := range pm.Headers {
				if string(h.Key) == KeyMetadata {
					t.Fatalf("the key is also a header: %q", h.Value)
				}
			}
			if msg.Metadata.Get(KeyMetadata) != tt.key {
				t.Fatal("Marshal changed the message's metadata")
			}
		})
	}
}
