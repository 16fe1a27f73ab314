// Package validate holds the request validation rules that both services
// apply, built on go-playground/validator, and turns its errors into RFC
// 9457 field errors.
//
// The rules:
//   - a uid is a UUID in its canonical 36-character text form;
//   - a username is 1–64 characters, all printable (no control characters)
//     and not only spaces;
//   - an email is a valid address (RFC 5322 addr-spec as validator checks
//     it) of at most 254 characters.
package validate

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/go-playground/validator/v10"

	"profiles/platform/httpx"
)

// Limits of the rules above.
const (
	MaxUsername = 64
	MaxEmail    = 254
)

// Tags for struct fields that follow the rules above.
const (
	UIDTag      = "required,uuid"
	UsernameTag = "required,username"
	EmailTag    = "required,max=254,email"
)

var v = func() *validator.Validate {
	v := validator.New(validator.WithRequiredStructEnabled())
	// Report fields by their JSON names.
	v.RegisterTagNameFunc(func(f reflect.StructField) string {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || name == "" {
			return f.Name
		}
		return name
	})
	if err := v.RegisterValidation("username", func(fl validator.FieldLevel) bool {
		return ValidUsername(fl.Field().String())
	}); err != nil {
		panic(err)
	}
	return v
}()

// ValidUsername reports whether s is 1–64 printable characters and not blank.
func ValidUsername(s string) bool {
	if !utf8.ValidString(s) || strings.TrimSpace(s) == "" || utf8.RuneCountInString(s) > MaxUsername {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// Struct validates s by its `validate` tags and returns nil or a 422
// problem listing every failing field.
func Struct(s any) *httpx.Problem {
	return problem(v.Struct(s), "")
}

// Var validates one value (a path or query parameter named name) against
// tag and returns nil or a 400 problem.
func Var(name, value, tag string) *httpx.Problem {
	if tag == UIDTag && isUUID(value) {
		return nil // what the validator's regexp accepts; it is on every request's path
	}
	p := problem(v.Var(value, tag), name)
	if p != nil {
		p.Status = http.StatusBadRequest
		p.Title = "Invalid parameter"
		p.Type = "urn:profiles:problem:invalid-parameter"
	}
	return p
}

func problem(err error, name string) *httpx.Problem {
	if err == nil {
		return nil
	}
	var verrs validator.ValidationErrors
	if !errors.As(err, &verrs) {
		return httpx.NewProblem(http.StatusBadRequest, "invalid-request", "", err.Error())
	}
	p := httpx.NewProblem(http.StatusUnprocessableEntity, "validation-failed", "Validation failed", "")
	var details []string
	for _, fe := range verrs {
		field := fe.Field()
		if name != "" {
			field = name
		}
		msg := message(fe)
		p.Errors = append(p.Errors, httpx.FieldError{Field: field, Rule: fe.Tag(), Message: msg})
		details = append(details, field+" "+msg)
	}
	p.Detail = strings.Join(details, "; ")
	return p
}

func message(fe validator.FieldError) string {
	switch fe.Tag() {
	case "required":
		return "is required"
	case "email":
		return "must be a valid email address"
	case "max":
		return fmt.Sprintf("must be at most %s characters", fe.Param())
	case "uuid":
		return "must be a UUID"
	case "username":
		return fmt.Sprintf("must be 1-%d printable characters", MaxUsername)
	default:
		return "fails rule " + fe.Tag()
	}
}

// isUUID reports whether s matches the validator's "uuid" regexp,
// ^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$,
// without running it.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
