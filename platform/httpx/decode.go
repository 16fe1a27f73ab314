package httpx

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
)

// DefaultMaxBody is the default limit on a request body, in bytes.
const DefaultMaxBody = 64 << 10

// DecodeJSON decodes the body of r into dst strictly: the media type must be
// application/json (415 otherwise), the body at most maxBytes (413), the
// value a single JSON object with no unknown fields and no trailing data
// (400). It returns nil or the problem to send.
func DecodeJSON(w http.ResponseWriter, r *http.Request, maxBytes int64, dst any) *Problem {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return NewProblem(http.StatusUnsupportedMediaType, "unsupported-media-type", "",
			fmt.Sprintf("Content-Type must be application/json, got %q", r.Header.Get("Content-Type")))
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBody
	}
	body := &firstByteReader{r: http.MaxBytesReader(w, r.Body, maxBytes)}
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeProblem(err, maxBytes)
	}
	// Decode accepts a JSON null for a struct and leaves it untouched, so
	// without this check the body `null` would pass as an empty object (found
	// by FuzzDecodeJSON). The value decoded fine, so the first non-space
	// byte of the body is the first byte of that value.
	if body.first != '{' {
		return NewProblem(http.StatusBadRequest, "malformed-json", "Malformed JSON", "the body must hold exactly one JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return decodeProblem(err, maxBytes)
		}
		return NewProblem(http.StatusBadRequest, "malformed-json", "Malformed JSON", "the body must hold exactly one JSON object")
	}
	return nil
}

func decodeProblem(err error, maxBytes int64) *Problem {
	var (
		mbe    *http.MaxBytesError
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return NewProblem(http.StatusRequestEntityTooLarge, "body-too-large", "",
			fmt.Sprintf("the body must be at most %d bytes", maxBytes))
	case errors.As(err, &syntax):
		return NewProblem(http.StatusBadRequest, "malformed-json", "Malformed JSON",
			fmt.Sprintf("syntax error at byte %d: %v", syntax.Offset, err))
	case errors.As(err, &typ):
		p := NewProblem(http.StatusBadRequest, "malformed-json", "Malformed JSON",
			fmt.Sprintf("field %q must be a %s", typ.Field, typ.Type))
		p.Errors = []FieldError{{Field: typ.Field, Rule: "type", Message: "must be a " + typ.Type.String()}}
		return p
	case errors.Is(err, io.EOF):
		return NewProblem(http.StatusBadRequest, "malformed-json", "Malformed JSON", "the body is empty")
	default:
		// json reports unknown fields as `json: unknown field "x"`.
		return NewProblem(http.StatusBadRequest, "malformed-json", "Malformed JSON", err.Error())
	}
}

// firstByteReader remembers the first byte of r that is not JSON
// whitespace, without holding anything else back.
type firstByteReader struct {
	r     io.Reader
	first byte // 0 until read
}

func (f *firstByteReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	for i := 0; i < n && f.first == 0; i++ {
		switch p[i] {
		case ' ', '\t', '\n', '\r':
		default:
			f.first = p[i]
		}
	}
	return n, err
}
