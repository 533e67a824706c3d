package ports_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
)

const modulePath = "github.com/taskpod/billing"

// ioLibraries are import path prefixes of packages that do I/O or wire the
// service. The inner layers must reach none of them, not even through
// another package.
var ioLibraries = []string{
	"net/http",
	"database/sql",
	"os/exec",
	"github.com/jackc",
	"github.com/stripe",
	"github.com/ThreeDotsLabs",
	"go.uber.org/fx",
	"github.com/prometheus",
}

// layerRule lists the packages of this module a layer may import and
// whether the I/O libraries are off limits for it.
type layerRule struct {
	layer     string
	ownAllow  []string
	forbidsIO bool
}

var layerRules = []layerRule{
	{layer: "domain", ownAllow: []string{"domain"}, forbidsIO: true},
	{layer: "ports", ownAllow: []string{"ports", "domain"}},
	{layer: "application", ownAllow: []string{"application", "domain", "ports"}, forbidsIO: true},
}

// goPackage is the part of `go list -json` output the checks read.
type goPackage struct {
	ImportPath string
	Imports    []string
}

// violation is one forbidden package reached from a layer, with the
// shortest import chain that reaches it.
type violation struct {
	chain  []string
	reason string
}

func (v violation) String() string {
	return fmt.Sprintf("%s: %s", strings.Join(v.chain, " → "), v.reason)
}

func TestLayersImportOnlyInward(t *testing.T) {
	graph := loadImportGraph(t, modulePath+"/domain/...", modulePath+"/ports/...", modulePath+"/application/...")
	for _, layer := range []string{"domain", "ports", "application"} {
		if !hasLayerPackage(graph, layer) {
			t.Fatalf("go list returned no package of %s; the check would pass vacuously", layer)
		}
	}

	for _, v := range checkLayers(graph) {
		t.Error(v)
	}
}

// The checker itself must be able to fail: a made-up graph with one
// violation of each kind must produce each of them.
func TestLayerCheckReportsChains(t *testing.T) {
	graph := map[string]goPackage{}
	add := func(path string, imports ...string) {
		graph[path] = goPackage{ImportPath: path, Imports: imports}
	}
	add(modulePath+"/domain", "fmt", modulePath+"/domain/clock")
	add(modulePath+"/domain/clock", "net/http/httptest")
	add("net/http/httptest", "net/http")
	add("net/http")
	add("fmt")
	add(modulePath+"/ports", modulePath+"/domain", modulePath+"/adapters/logging")
	add(modulePath+"/adapters/logging", "log/slog")
	add("log/slog")
	add(modulePath+"/application", modulePath+"/ports", "github.com/jackc/pgx/v5")
	add("github.com/jackc/pgx/v5")

	got := map[string]bool{}
	for _, v := range checkLayers(graph) {
		got[v.String()] = true
	}
	want := []string{
		modulePath + "/domain → " + modulePath + "/domain/clock → net/http/httptest: I/O library net/http",
		modulePath + "/ports → " + modulePath + "/adapters/logging: adapters must not be imported by ports",
		modulePath + "/application → github.com/jackc/pgx/v5: I/O library github.com/jackc",
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("missing violation %q; got %v", w, got)
		}
	}
}

// loadImportGraph runs `go list -deps -json` and returns every listed
// package by import path.
func loadImportGraph(t *testing.T, patterns ...string) map[string]goPackage {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	args := append([]string{"list", "-deps", "-json=ImportPath,Imports"}, patterns...)
	cmd := exec.Command(goBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}

	graph := map[string]goPackage{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p goPackage
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		graph[p.ImportPath] = p
	}
	return graph
}

func hasLayerPackage(graph map[string]goPackage, layer string) bool {
	for path := range graph {
		if inPackageTree(path, modulePath+"/"+layer) {
			return true
		}
	}
	return false
}

// checkLayers walks the imports of every package of each inner layer and
// returns each forbidden package it reaches with the shortest chain.
func checkLayers(graph map[string]goPackage) []violation {
	var out []violation
	roots := make([]string, 0, len(graph))
	for path := range graph {
		roots = append(roots, path)
	}
	sort.Strings(roots)

	for _, rule := range layerRules {
		for _, root := range roots {
			if inPackageTree(root, modulePath+"/"+rule.layer) {
				out = append(out, walkLayer(graph, root, rule)...)
			}
		}
	}
	return out
}

// walkLayer searches breadth first from root, so each reported chain is a
// shortest one, and stops at the first forbidden package on each path.
func walkLayer(graph map[string]goPackage, root string, rule layerRule) []violation {
	parent := map[string]string{root: ""}
	queue := []string{root}
	var out []violation
	for len(queue) > 0 {
		path := queue[0]
		queue = queue[1:]
		for _, imp := range graph[path].Imports {
			if _, seen := parent[imp]; seen {
				continue
			}
			parent[imp] = path
			if reason := forbidden(rule, imp); reason != "" {
				out = append(out, violation{chain: chainTo(parent, imp), reason: reason})
				continue
			}
			queue = append(queue, imp)
		}
	}
	return out
}

// forbidden returns why rule's layer may not reach path, or "".
func forbidden(rule layerRule, path string) string {
	if inPackageTree(path, modulePath) {
		for _, allowed := range rule.ownAllow {
			if inPackageTree(path, modulePath+"/"+allowed) {
				return ""
			}
		}
		if inPackageTree(path, modulePath+"/adapters") {
			return fmt.Sprintf("adapters must not be imported by %s", rule.layer)
		}
		return fmt.Sprintf("%s may import only %s of this module", rule.layer, strings.Join(rule.ownAllow, ", "))
	}
	if rule.forbidsIO {
		for _, lib := range ioLibraries {
			if inPackageTree(path, lib) {
				return "I/O library " + lib
			}
		}
	}
	return ""
}

func chainTo(parent map[string]string, path string) []string {
	var chain []string
	for p := path; p != ""; p = parent[p] {
		chain = append(chain, p)
	}
	for i, j := 0, len(chain)-1; i < j; i, j = i+1, j-1 {
		chain[i], chain[j] = chain[j], chain[i]
	}
	return chain
}

// inPackageTree reports whether path is prefix or a package below it.
func inPackageTree(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}
