package main

import (
	"os"
	"regexp"
	"testing"
)

// TestReadmeListsEveryVariable keeps the README's configuration table in
// step with the variables billingd reads.
func TestReadmeListsEveryVariable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([A-Z_]+)` \\|").FindAllStringSubmatch(string(readme), -1) {
		listed[m[1]] = true
	}

	for _, spec := range envSpecs {
		if !listed[spec.Name] {
			t.Errorf("README.md has no configuration row for %s", spec.Name)
		}
		delete(listed, spec.Name)
	}
	for name := range listed {
		t.Errorf("README.md documents %s, which billingd does not read", name)
	}
}
