// Package openapi embeds the OpenAPI 3 description of the profiles API,
// which the front door serves at /openapi.yaml and the end-to-end tests
// check every response against.
package openapi

import _ "embed"

// Spec is the OpenAPI 3 document, in YAML.
//
//go:embed openapi.yaml
var Spec []byte
