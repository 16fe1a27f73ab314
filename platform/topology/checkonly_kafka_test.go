package topology

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"profiles/platform/kafkax"
	"profiles/platform/testenv"
)

// With CheckOnly (TOPICS_CREATE=false) a missing topic is an error that
// says what to create, and nothing is created; once the topic exists as
// required, the check passes; a topic with the wrong partition count is
// refused.
func TestCheckOnlyCreatesNothing(t *testing.T) {
	c := Config{Config: kafkax.Config{Brokers: testenv.KafkaBrokers(t)}, Partitions: 3, CheckOnly: true}
	name := fmt.Sprintf("checkonly-%06d", rand.IntN(1e6))
	spec := TopicSpec{Name: name, Partitions: 3, Required: map[string]string{"cleanup.policy": "compact"}}
	ctx := context.Background()
	err := CreateTopics(ctx, c, "test", []TopicSpec{spec})
	if err == nil || !strings.Contains(err.Error(), "does not exist, and TOPICS_CREATE=false") {
		t.Fatalf("a missing topic, checked only: %v", err)
	}
	// Still missing: the check created nothing.
	if err := CreateTopics(ctx, c, "test", []TopicSpec{spec}); err == nil {
		t.Fatal("the first check created the topic")
	}
	create := c
	create.CheckOnly = false
	if err := CreateTopics(ctx, create, "test", []TopicSpec{spec}); err != nil {
		t.Fatal(err)
	}
	if err := CreateTopics(ctx, c, "test", []TopicSpec{spec}); err != nil {
		t.Fatalf("the topic exists as required, checked only: %v", err)
	}
	wrong := spec
	wrong.Partitions = 4
	if err := CreateTopics(ctx, c, "test", []TopicSpec{wrong}); err == nil || !strings.Contains(err.Error(), "partitions") {
		t.Fatalf("a topic with 3 partitions passed a check for 4: %v", err)
	}
}
