package openapi_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
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

// The Problem schema lists every problem type the code can answer, and no
// other: the slugs of httpx.NewProblem calls (and of literal
// urn:profiles:problem: URIs) in the non-test Go files of the repository.
func TestProblemTypesEnumMatchesTheCode(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(openapi.Spec)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, v := range doc.Components.Schemas["Problem"].Value.Properties["type"].Value.Enum {
		listed[v.(string)] = true
	}
	inCode := map[string]bool{"about:blank": true}
	calls := regexp.MustCompile(`NewProblem\([^,()]+,\s*"([a-z][a-z-]*)"`)
	uris := regexp.MustCompile(`"urn:profiles:problem:([a-z][a-z-]*)"`)
	root := filepath.Join("..", "..")
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != root || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, re := range []*regexp.Regexp{calls, uris} {
			for _, m := range re.FindAllStringSubmatch(string(b), -1) {
				inCode["urn:profiles:problem:"+m[1]] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(inCode) < 20 {
		t.Fatalf("found only %d problem types in the code: is the walk broken?", len(inCode))
	}
	for typ := range inCode {
		if !listed[typ] {
			t.Errorf("the code answers %s, which the Problem schema's enum does not list", typ)
		}
	}
	for typ := range listed {
		if !inCode[typ] {
			t.Errorf("the Problem schema lists %s, which no code answers", typ)
		}
	}
}

// Every operation has a tag, and an example of its request body and of
// each success response that has a body (the API page shows them).
func TestEveryOperationHasATagAndExamples(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(openapi.Spec)
	if err != nil {
		t.Fatal(err)
	}
	hasExample := func(mt *openapi3.MediaType) bool {
		return mt.Example != nil || len(mt.Examples) > 0 || (mt.Schema != nil && mt.Schema.Value.Example != nil)
	}
	n := 0
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			n++
			name := method + " " + path
			if len(op.Tags) == 0 {
				t.Errorf("%s has no tag", name)
			}
			if op.RequestBody != nil {
				for ct, mt := range op.RequestBody.Value.Content {
					if !hasExample(mt) {
						t.Errorf("%s: request body %s has no example", name, ct)
					}
				}
			}
			bodies := 0
			for code, resp := range op.Responses.Map() {
				if !strings.HasPrefix(code, "2") || code == "202" {
					continue
				}
				for ct, mt := range resp.Value.Content {
					bodies++
					if !hasExample(mt) {
						t.Errorf("%s: response %s %s has no example", name, code, ct)
					}
				}
			}
			if bodies == 0 && op.RequestBody == nil {
				// No body either way (DELETE): its parameters show the example.
				for _, p := range append(item.Parameters, op.Parameters...) {
					if p.Value.In == "path" && p.Value.Example == nil {
						t.Errorf("%s: parameter %s has no example", name, p.Value.Name)
					}
				}
			}
		}
	}
	if n != 7 {
		t.Errorf("%d operations, want 7", n)
	}
}
