package http

import (
	_ "embed"
	"log/slog"
	"net/http"
)

// openAPISpec is the OpenAPI 3 description of every public route, checked
// against the running handlers by the package's tests.
//
//go:embed openapi.yaml
var openAPISpec []byte

// OpenAPISpec returns the API's OpenAPI 3 document in YAML.
func OpenAPISpec() []byte {
	return append([]byte(nil), openAPISpec...)
}

func serveOpenAPISpec(w http.ResponseWriter, r *http.Request) {
	// application/yaml is the media type registered for YAML (RFC 9512).
	w.Header().Set("Content-Type", "application/yaml")
	if _, err := w.Write(openAPISpec); err != nil {
		slog.Default().WarnContext(r.Context(), "write OpenAPI spec failed", "error", err)
	}
}
