package validate

import (
	"net/http"
	"strings"
	"testing"
)

type profileBody struct {
	Username string `json:"username" validate:"required,username"`
	Email    string `json:"email" validate:"required,max=254,email"`
}

func TestStruct(t *testing.T) {
	long := strings.Repeat("a", 250) + "@b.cd" // 255 characters
	tests := []struct {
		name       string
		body       profileBody
		wantFields []string
	}{
		{"valid", profileBody{"bob", "bob1@mail.com"}, nil},
		{"unicode username", profileBody{"Zoë 🚀", "z@mail.com"}, nil},
		{"64 characters is the limit", profileBody{strings.Repeat("é", 64), "z@mail.com"}, nil},
		{"65 characters is too long", profileBody{strings.Repeat("é", 65), "z@mail.com"}, []string{"username"}},
		{"missing email", profileBody{"bob", ""}, []string{"email"}},
		{"invalid email", profileBody{"bob", "not-an-email"}, []string{"email"}},
		{"email over 254 characters", profileBody{"bob", long}, []string{"email"}},
		{"blank username", profileBody{"   ", "b@mail.com"}, []string{"username"}},
		{"control character", profileBody{"bo\x07b", "b@mail.com"}, []string{"username"}},
		{"both invalid", profileBody{"", "x"}, []string{"username", "email"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Struct(tt.body)
			if len(tt.wantFields) == 0 {
				if p != nil {
					t.Fatalf("unexpected problem %+v", p)
				}
				return
			}
			if p == nil || p.Status != http.StatusUnprocessableEntity {
				t.Fatalf("problem = %+v, want 422", p)
			}
			var got []string
			for _, fe := range p.Errors {
				got = append(got, fe.Field)
			}
			if strings.Join(got, ",") != strings.Join(tt.wantFields, ",") {
				t.Fatalf("failing fields = %v, want %v", got, tt.wantFields)
			}
		})
	}
}

func TestVar(t *testing.T) {
	if p := Var("uid", "74292b21-0fbb-4f1d-a18f-fa80f947fa5d", UIDTag); p != nil {
		t.Fatalf("valid uid rejected: %+v", p)
	}
	p := Var("uid", "not-a-uuid", UIDTag)
	if p == nil || p.Status != http.StatusBadRequest || p.Errors[0].Field != "uid" {
		t.Fatalf("malformed uid: %+v", p)
	}
}
