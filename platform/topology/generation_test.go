package topology

import (
	"testing"
)

func TestGenerationNames(t *testing.T) {
	c := Config{SnapshotsTopic: "profile-snapshots", EmailIndexTopic: "profile-email-index"}
	tests := []struct {
		n                int
		snapshots, index string
		group            string
	}{
		{0, "profile-snapshots", "profile-email-index", "q"},
		{1, "profile-snapshots", "profile-email-index", "q"},
		{2, "profile-snapshots.v2", "profile-email-index.v2", "q.v2"},
		{13, "profile-snapshots.v13", "profile-email-index.v13", "q.v13"},
	}
	for _, tt := range tests {
		g := c.ForGeneration(tt.n)
		if g.SnapshotsTopic != tt.snapshots || g.EmailIndexTopic != tt.index || GenerationGroup("q", tt.n) != tt.group {
			t.Errorf("generation %d: %s %s %s", tt.n, g.SnapshotsTopic, g.EmailIndexTopic, GenerationGroup("q", tt.n))
		}
	}
}

func TestControlFoldsTheControlTopic(t *testing.T) {
	var c Control
	if c.CurrentGeneration() != 1 {
		t.Fatalf("empty control: generation %d, want 1", c.CurrentGeneration())
	}
	c.apply("generation/2", []byte(`{"generation":2,"snapshots":"s.v2","events":10}`))
	c.apply("generation/3", []byte(`{"generation":3}`))
	c.apply("current-generation", []byte(`{"generation":2}`))
	c.apply("current-generation", []byte(`not json`)) // ignored
	c.apply("generation/3", nil)                      // dropped
	c.apply("generation/x", []byte(`{}`))             // not a generation
	if c.CurrentGeneration() != 2 {
		t.Errorf("current = %d, want 2", c.CurrentGeneration())
	}
	if len(c.Builds) != 1 || c.Builds[2].Snapshots != "s.v2" || c.Builds[2].Events != 10 {
		t.Errorf("builds = %+v", c.Builds)
	}
}
