package events_test

import (
	"fmt"
	"time"

	"profiles/events"
)

// Folding a history with Apply gives the current state; the same function
// runs in command-svc (to check a command) and in the projector.
func ExampleApply() {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var p events.Profile
	for _, data := range []events.Payload{
		events.ProfileCreated{Username: "bob", Email: "bob1@mail.com"},
		events.EmailChanged{Email: "bob2@mail.com"},
	} {
		e := events.New("id", p, "74292b21-0fbb-4f1d-a18f-fa80f947fa5d", data, at)
		var err error
		if p, err = events.Apply(p, e); err != nil {
			panic(err)
		}
	}
	fmt.Println(p.Username, p.Email, p.Version)
	// Output: bob bob2@mail.com 2
}

// A record written under schema version 1 has no displayName. Decode
// upcasts it to the current version first: the create gets its username as
// displayName, and the event reads as if written today.
func ExampleDecode_upcast() {
	v1 := `{"id":"e1","type":"ProfileCreated","uid":"74292b21-0fbb-4f1d-a18f-fa80f947fa5d","version":1,` +
		`"occurredAt":"2026-01-01T00:00:00Z","schemaVersion":1,"data":{"username":"bob","email":"bob1@mail.com"}}`
	e, err := events.Decode([]byte(v1))
	if err != nil {
		panic(err)
	}
	created := e.Data.(events.ProfileCreated)
	fmt.Println(e.SchemaVersion, created.Username, created.DisplayName)
	b, _ := events.Encode(e)
	fmt.Println(string(b))
	// Output:
	// 3 bob bob
	// {"id":"e1","type":"ProfileCreated","uid":"74292b21-0fbb-4f1d-a18f-fa80f947fa5d","version":1,"occurredAt":"2026-01-01T00:00:00Z","schemaVersion":3,"data":{"username":"bob","displayName":"bob","email":"bob1@mail.com"}}
}
