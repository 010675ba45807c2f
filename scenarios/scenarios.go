// Package scenarios holds helix's named simulator scenarios as data files (data/*.json,
// embedded in the binary) and the loader that turns a file into a validated
// sim.Scenario. The format is documented in README.md beside this file.
package scenarios

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/helixcoord/helix/sim"
)

//go:embed data/*.json
var files embed.FS

// Names lists the built-in scenarios, sorted.
func Names() []string {
	entries, err := fs.ReadDir(files, "data")
	if err != nil {
		panic(err) // embedded at build time: cannot fail
	}
	var out []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// Builtin loads a built-in scenario by name.
func Builtin(name string) (*sim.Scenario, error) {
	data, err := files.ReadFile(path.Join("data", name+".json"))
	if err != nil {
		return nil, fmt.Errorf("scenario %q: no such built-in scenario (helix sim list shows them)", name)
	}
	sc, err := Parse(data, name+".json")
	if err != nil {
		return nil, err
	}
	if sc.Name != name {
		return nil, fmt.Errorf("%s.json: name %q must match the file name", name, sc.Name)
	}
	return sc, nil
}

// All loads every built-in scenario.
func All() ([]*sim.Scenario, error) {
	var out []*sim.Scenario
	for _, n := range Names() {
		sc, err := Builtin(n)
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, nil
}

// Load resolves a --scenario argument: a built-in name, or else a path to a JSON file.
func Load(nameOrFile string) (*sim.Scenario, error) {
	if slices.Contains(Names(), nameOrFile) {
		return Builtin(nameOrFile)
	}
	if !strings.ContainsAny(nameOrFile, "/.") {
		return nil, fmt.Errorf("scenario %q: not a built-in scenario (see helix sim list) nor a file path", nameOrFile)
	}
	data, err := os.ReadFile(nameOrFile)
	if err != nil {
		return nil, fmt.Errorf("scenario file: %w", err)
	}
	return Parse(data, nameOrFile)
}

// Parse decodes and validates one scenario file. Unknown fields are errors (a typo in a
// fault's name must not silently turn it off); so is anything after the object.
func Parse(data []byte, source string) (*sim.Scenario, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var sc sim.Scenario
	if err := dec.Decode(&sc); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: unexpected data after the scenario object", source)
	}
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return &sc, nil
}
