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
