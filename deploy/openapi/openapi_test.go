package openapi_test

import (
	"context"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"profiles/deploy/openapi"
)

func TestSpecIsValidOpenAPI3(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(openapi.Spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/api/profile", "/api/profile/{uid}", "/api/search"} {
		if doc.Paths.Find(path) == nil {
			t.Errorf("%s is not described", path)
		}
	}
}
