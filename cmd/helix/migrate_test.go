package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/mysqlstore"
	"github.com/helixcoord/helix/mysqlstore/mysqltest"
)

func TestMigrateAndFenceBumpHelp(t *testing.T) {
	for _, cmd := range []string{"migrate", "fence-bump"} {
		code, out, _ := quick(t, nil, cmd, "--help")
		if code != 0 || !strings.Contains(out, "Examples:") || !strings.Contains(out, "helix "+cmd) {
			t.Errorf("%s --help: exit %d, want 0 and usage with examples on stdout; got:\n%s", cmd, code, out)
		}
		if code, _, _ := quick(t, nil, cmd, "--no-such-flag"); code != 2 {
			t.Errorf("%s with a bad flag: exit %d, want 2", cmd, code)
		}
		if code, _, errOut := quick(t, nil, cmd); code != 1 || !strings.Contains(errOut, "HELIX_DSN") {
			t.Errorf("%s without a DSN: exit %d, stderr %q; want 1 and a hint naming HELIX_DSN", cmd, code, errOut)
		}
	}
	if code, _, errOut := quick(t, nil, "fence-bump", "--by", "0"); code != 2 || !strings.Contains(errOut, "--by") {
		t.Errorf("fence-bump --by 0: exit %d, stderr %q; want 2 naming --by", code, errOut)
	}
	if code, _, _ := quick(t, nil, "migrate", "extra"); code != 2 {
		t.Errorf("migrate with a positional argument: exit %d, want 2", code)
	}
}

func TestMigrateCommand(t *testing.T) {
	dsn := mysqltest.DSN(t)
	vars := map[string]string{"HELIX_DSN": dsn}
	if code, out, errOut := quick(t, vars, "migrate", "--check"); code != 1 || !strings.Contains(out, "schema version 0") {
		t.Fatalf("migrate --check on an empty database: exit %d, out %q, err %q; want 1 and version 0", code, out, errOut)
	}
	code, out, errOut := quick(t, vars, "migrate")
	if code != 0 || !strings.Contains(out, "migrated from version 0") {
		t.Fatalf("migrate: exit %d, out %q, err %q", code, out, errOut)
	}
	code, out, errOut = quick(t, vars, "migrate")
	if code != 0 || !strings.Contains(out, "nothing to do") {
		t.Fatalf("second migrate: exit %d, out %q, err %q; want 0 and nothing to do", code, out, errOut)
	}
	if code, _, _ := quick(t, vars, "migrate", "--check"); code != 0 {
		t.Fatalf("migrate --check after migrating: exit %d, want 0", code)
	}
	// The DSN may come from a file instead; the file's trailing newline is trimmed.
	f := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(f, []byte(dsn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := quick(t, nil, "migrate", "--dsn-file", f); code != 0 {
		t.Fatalf("migrate --dsn-file: exit %d, err %q", code, errOut)
	}
}

func TestMigrateErrorsHidePassword(t *testing.T) {
	const secret = "s3cr3t-pa55"
	vars := map[string]string{"HELIX_DSN": "helix:" + secret + "@tcp(127.0.0.1:1)/helix?timeout=200ms"}
	code, out, errOut := quick(t, vars, "migrate")
	if code != 1 {
		t.Fatalf("migrate against a closed port: exit %d, want 1", code)
	}
	if strings.Contains(out+errOut, secret) {
		t.Fatalf("the password leaked into the output: %q", out+errOut)
	}
}

func TestFenceBumpCommand(t *testing.T) {
	dsn := mysqltest.DSN(t)
	vars := map[string]string{"HELIX_DSN": dsn}
	if code, _, errOut := quick(t, vars, "migrate"); code != 0 {
		t.Fatalf("migrate: %s", errOut)
	}
	ctx := context.Background()
	s, err := mysqlstore.Open(ctx, dsn, mysqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	held, err := s.AcquireLease(ctx, "coordinator", "a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RegisterNode(ctx, engine.NodeSpec{ID: "w", Capacity: 1}); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := quick(t, vars, "fence-bump")
	if code != 0 || !strings.Contains(out, "1 lease(s)") {
		t.Fatalf("fence-bump: exit %d, out %q, err %q", code, out, errOut)
	}
	l, err := s.ReadLease(ctx, "coordinator")
	if err != nil {
		t.Fatal(err)
	}
	if l.Lease.Epoch != held.Lease.Epoch+1_000_000 || l.Lease.Status != engine.LeaseInactive || l.Lease.Owner != "" {
		t.Fatalf("after fence-bump the lease is %+v; want epoch %d, inactive, no owner", l.Lease, held.Lease.Epoch+1_000_000)
	}
	// The old holder's fenced writes are refused; the next grant is above the bump.
	if _, err := s.Apply(ctx, engine.Batch{Fence: engine.Fence{Key: "coordinator", Epoch: held.Lease.Epoch}}); !errors.Is(err, engine.ErrFenced) {
		t.Fatalf("Apply at the pre-bump epoch: %v, want ErrFenced", err)
	}
	if _, err := s.RenewLease(ctx, "coordinator", "a", held.Lease.Epoch, time.Minute); !errors.Is(err, engine.ErrLeaseLost) {
		t.Fatalf("renew at the pre-bump epoch: %v, want ErrLeaseLost", err)
	}
	again, err := s.AcquireLease(ctx, "coordinator", "b", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if again.Lease.Epoch != held.Lease.Epoch+1_000_001 {
		t.Fatalf("next grant has epoch %d, want %d", again.Lease.Epoch, held.Lease.Epoch+1_000_001)
	}
	if code, out, _ := quick(t, vars, "fence-bump", "--by", "5", "--cluster", "other"); code != 0 || !strings.Contains(out, "0 lease(s)") {
		t.Fatalf("fence-bump of an empty cluster: exit %d, out %q", code, out)
	}
}
