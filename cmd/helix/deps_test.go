package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The binary's import graph must not contain test-only dependencies, and the engine
// must stay stdlib-only: these are design rules, so a test holds them.
func TestImportGraph(t *testing.T) {
	deps := func(pkg string) []string {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		return strings.Fields(string(out))
	}
	testOnly := []string{"pgregory.net/rapid", "github.com/DATA-DOG/go-sqlmock", "github.com/testcontainers/", "/engine/storetest", "/mysqlstore/mysqltest"}
	for _, d := range deps("github.com/helixcoord/helix/cmd/helix") {
		for _, bad := range testOnly {
			if strings.Contains(d, bad) {
				t.Errorf("the helix binary imports test-only package %s", d)
			}
		}
	}
	for _, d := range deps("github.com/helixcoord/helix/engine") {
		first := strings.SplitN(d, "/", 2)[0]
		if strings.Contains(first, ".") && !strings.HasPrefix(d, "github.com/helixcoord/helix/engine") {
			t.Errorf("engine imports non-stdlib package %s", d)
		}
	}
}
