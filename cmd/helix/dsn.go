package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

// The DSN (it carries a password) is not taken from the command line, where it would
// show in `ps` and shell history: it comes from HELIX_DSN, or from a file named by
// --dsn-file or HELIX_DSN_FILE (a mounted secret). Every command that talks to MySQL
// (node, migrate, fence-bump, tasklist, drain, status) shares these two helpers; only
// migrate and fence-bump also accept --dsn, with a warning (see dsnFromFlags).

// dsnFlag registers --dsn-file on fs and returns its value.
func dsnFlag(fs *flag.FlagSet) *string {
	return fs.String("dsn-file", "", "read the MySQL DSN from this `file` (default: $HELIX_DSN, then $HELIX_DSN_FILE)")
}

// errNoDSN is returned when no DSN source is configured.
var errNoDSN = errors.New("no MySQL DSN: set HELIX_DSN, or HELIX_DSN_FILE / --dsn-file to a file holding it " +
	"(e.g. HELIX_DSN='user:pass@tcp(127.0.0.1:3306)/helix')")

// loadDSN resolves the DSN: --dsn-file, then HELIX_DSN, then HELIX_DSN_FILE. The file's
// content is trimmed of surrounding whitespace (a trailing newline is the usual case).
// parseFlags fills an unset --dsn-file from HELIX_DSN_FILE, so a dsnFile equal to it
// came from the environment, where HELIX_DSN goes first.
func loadDSN(e *env, dsnFile string) (string, error) {
	if dsnFile == "" || dsnFile == e.getenv("HELIX_DSN_FILE") {
		if d := strings.TrimSpace(e.getenv("HELIX_DSN")); d != "" {
			return d, nil
		}
		dsnFile = e.getenv("HELIX_DSN_FILE")
	}
	if dsnFile == "" {
		return "", errNoDSN
	}
	b, err := os.ReadFile(dsnFile)
	if err != nil {
		return "", fmt.Errorf("reading DSN file: %w", err)
	}
	d := strings.TrimSpace(string(b))
	if d == "" {
		return "", fmt.Errorf("DSN file %s is empty", dsnFile)
	}
	return d, nil
}
