package http

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Literal error codes in the service's source: domain.Invalid(field,
// "code", ...), badRequest("code", ...) and apiError{Code: "code"}.
var errorCodePatterns = []*regexp.Regexp{
	regexp.MustCompile(`Invalid\([^,()]+, "([a-z_]+)"`),
	regexp.MustCompile(`badRequest\("([a-z_]+)"`),
	regexp.MustCompile(`Code: +"([a-z_]+)"\s*[,}\n]`),
}

// sourceErrorCodes returns every error code the service's non-test source
// can send, with the file that sends it.
func sourceErrorCodes(t *testing.T) map[string]string {
	t.Helper()
	codes := map[string]string{}
	for _, dir := range []string{"../../domain", "../../application", "../../adapters"} {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && d.Name() == "emulator" {
				// The Stripe emulator sends Stripe's codes, not ours.
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			if filepath.Base(path) == "tokens.go" {
				// Token validation errors reach only billingd token create.
				return nil
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, re := range errorCodePatterns {
				for _, m := range re.FindAllStringSubmatch(string(src), -1) {
					codes[m[1]] = path
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, code := range webhookRejectionCodes(t) {
		codes["webhook_"+code] = "webhook_handler.go"
	}
	if len(codes) < 30 {
		t.Fatalf("found only %d error codes; the source scan is broken", len(codes))
	}
	return codes
}

// webhookRejectionCodes returns the string literals rejectionCode returns;
// the webhook route sends them prefixed with webhook_.
func webhookRejectionCodes(t *testing.T) []string {
	t.Helper()
	file, err := parser.ParseFile(token.NewFileSet(), "webhook_handler.go", nil, 0)
	if err != nil {
		t.Fatalf("parse webhook_handler.go: %v", err)
	}
	var codes []string
	ast.Inspect(file, func(n ast.Node) bool {
		fn, ok := n.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "rejectionCode" {
			return true
		}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			ret, ok := n.(*ast.ReturnStmt)
			if !ok || len(ret.Results) != 1 {
				return true
			}
			if lit, ok := ret.Results[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if code, err := strconv.Unquote(lit.Value); err == nil {
					codes = append(codes, code)
				}
			}
			return true
		})
		return false
	})
	if len(codes) == 0 {
		t.Fatal("rejectionCode returns no string literals; update this scan to where webhook codes come from")
	}
	return codes
}

// Every error code the service can send is listed in docs/api.md and in
// openapi.yaml, so integrators can handle each one.
func TestEveryErrorCodeDocumented(t *testing.T) {
	docs, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	spec := string(OpenAPISpec())
	for code, file := range sourceErrorCodes(t) {
		if !strings.Contains(string(docs), "`"+code+"`") {
			t.Errorf("error code %s (sent by %s) is missing from the errors table of docs/api.md", code, file)
		}
		if !strings.Contains(spec, "`"+code+"`") {
			t.Errorf("error code %s (sent by %s) is missing from the error responses of openapi.yaml", code, file)
		}
	}
}
