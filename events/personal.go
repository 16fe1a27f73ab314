package events

// SealedPII marks a record whose personal fields are encrypted with
// AES-256-GCM under the profile's data key (the envelope's or the
// snapshot's "pii" field). This package reads and writes such records as
// stored, their personal fields ciphertext; package pii seals and opens
// them.
const SealedPII = "aes-256-gcm/v1"

// PersonalField is one personal field of a payload or profile: Name is the
// name it is sealed under (part of the storage format: "username",
// "displayName" or "email"), and Value points into the copy being edited.
type PersonalField struct {
	Name  string
	Value *string
}

// EditPayloadPersonal returns a copy of d whose personal fields edit may
// rewrite in place, in the order username, displayName, email. For a
// payload that has none (ProfileDeleted, or an unknown payload) it returns
// d as it is and does not call edit. It is pure; edit's error is returned
// as it is.
func EditPayloadPersonal(d Payload, edit func([]PersonalField) error) (Payload, error) {
	var err error
	switch v := d.(type) {
	case ProfileCreated:
		err = edit([]PersonalField{{"username", &v.Username}, {"displayName", &v.DisplayName}, {"email", &v.Email}})
		d = v
	case UsernameChanged:
		err = edit([]PersonalField{{"username", &v.Username}})
		d = v
	case EmailChanged:
		err = edit([]PersonalField{{"email", &v.Email}})
		d = v
	}
	return d, err
}

// EditProfilePersonal returns a copy of p whose personal fields (username,
// displayName, email, in that order) edit may rewrite in place. It is
// pure; edit's error is returned as it is.
func EditProfilePersonal(p Profile, edit func([]PersonalField) error) (Profile, error) {
	err := edit([]PersonalField{{"username", &p.Username}, {"displayName", &p.DisplayName}, {"email", &p.Email}})
	return p, err
}
