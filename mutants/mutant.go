package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Mutant is one deliberate bug, written as search-and-replace patches on exact source
// text. Each patch's Old text must occur exactly once in its file: if the code it
// anchors to has changed, applying the mutant fails loudly (re-anchor it) instead of
// silently testing nothing.
type Mutant struct {
	Name string
	// Area groups the table: store, worker, coordinator, allocator, sorting.
	Area string
	// Breaks says what the bug breaks, for the table.
	Breaks  string
	Patches []Patch
}

// Patch replaces the one occurrence of Old in File (relative to the module root).
type Patch struct {
	File, Old, New string
}

// apply patches the tree rooted at dir.
func (m Mutant) apply(dir string) error {
	for i, p := range m.Patches {
		path := filepath.Join(dir, filepath.FromSlash(p.File))
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("mutant %s, patch %d: %w", m.Name, i+1, err)
		}
		out, err := patchText(string(b), p)
		if err != nil {
			return fmt.Errorf("mutant %s, patch %d: %w", m.Name, i+1, err)
		}
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			return fmt.Errorf("mutant %s, patch %d: %w", m.Name, i+1, err)
		}
	}
	return nil
}

// patchText applies one patch to a file's text.
func patchText(src string, p Patch) (string, error) {
	switch n := strings.Count(src, p.Old); n {
	case 1:
		return strings.Replace(src, p.Old, p.New, 1), nil
	case 0:
		return "", fmt.Errorf("%s: anchor text not found (the code changed: re-anchor this mutant):\n%s", p.File, p.Old)
	default:
		return "", fmt.Errorf("%s: anchor text found %d times, want exactly once (make it longer):\n%s", p.File, n, p.Old)
	}
}
