package app

import "profiles/events"

// SearchProfiles finds the live profiles with an email address; the match is
// on the normalized form (events.NormalizeEmail).
type SearchProfiles struct {
	Email string
}

// SearchProfilesHandler answers SearchProfiles.
type SearchProfilesHandler struct {
	View ProfileView
}

// Handle returns the matches, an empty non-nil slice when there are none.
func (h SearchProfilesHandler) Handle(q SearchProfiles) ([]events.Profile, error) {
	found, err := h.View.SearchEmail(q.Email)
	if found == nil && err == nil {
		found = []events.Profile{}
	}
	return found, err
}
