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
