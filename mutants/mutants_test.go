package main

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAnchorsApply: every mutant's anchors occur exactly once in today's tree, and the
// patched files still parse. A change to the code a mutant anchors to fails here, not
// silently in a harness run that would test nothing.
func TestAnchorsApply(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if err := checkAnchors(root, mutants); err != nil {
		t.Fatal(err)
	}
	if len(mutants) < 24 {
		t.Fatalf("%d mutants, want the 9 former flaws and at least 15 more", len(mutants))
	}
	names := map[string]bool{}
	for _, m := range mutants {
		if names[m.Name] || m.Name == "" || m.Area == "" || m.Breaks == "" || len(m.Patches) == 0 {
			t.Errorf("mutant %q: duplicate name or missing field", m.Name)
		}
		names[m.Name] = true
		texts := map[string]string{}
		for _, p := range m.Patches {
			src, ok := texts[p.File]
			if !ok {
				b, err := os.ReadFile(filepath.Join(root, p.File))
				if err != nil {
					t.Fatal(err)
				}
				src = string(b)
			}
			out, err := patchText(src, p)
			if err != nil {
				t.Fatal(err)
			}
			if out == src {
				t.Errorf("mutant %s: a patch changes nothing", m.Name)
			}
			texts[p.File] = out
		}
		for f, src := range texts {
			if _, err := parser.ParseFile(token.NewFileSet(), f, src, 0); err != nil {
				t.Errorf("mutant %s: %s no longer parses: %v", m.Name, f, err)
			}
		}
	}
}

// TestPatchFailsLoudly: an anchor that is missing or ambiguous is an error naming the
// file, never a silent no-op.
func TestPatchFailsLoudly(t *testing.T) {
	if _, err := patchText("a b a", Patch{File: "f.go", Old: "c", New: "d"}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("missing anchor: %v", err)
	}
	if _, err := patchText("a b a", Patch{File: "f.go", Old: "a", New: "d"}); err == nil || !strings.Contains(err.Error(), "2 times") {
		t.Errorf("ambiguous anchor: %v", err)
	}
	if out, err := patchText("a b c", Patch{File: "f.go", Old: "b", New: "x"}); err != nil || out != "a x c" {
		t.Errorf("patch: %q %v", out, err)
	}
	dir := t.TempDir()
	m := Mutant{Name: "m", Patches: []Patch{{File: "x.go", Old: "nope", New: ""}}}
	if err := os.WriteFile(filepath.Join(dir, "x.go"), []byte("package x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.apply(dir); err == nil || !strings.Contains(err.Error(), "mutant m, patch 1") {
		t.Errorf("apply: %v", err)
	}
}
