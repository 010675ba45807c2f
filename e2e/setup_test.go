package e2e

import (
	"context"
	"strconv"
	"testing"
)

// migratedCluster builds the helix binary into dir, migrates dsn's database, and creates
// the task lists given as name → partitions in domain e2e: the start of every test that
// runs real nodes on a fresh database.
func migratedCluster(t *testing.T, ctx context.Context, dsn, dir string, p Profile, tasklists map[string]int) *Cluster {
	t.Helper()
	bin, err := Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{Bin: bin, DSN: dsn, Dir: dir, Profile: p}
	if _, err := c.Helix(ctx, "migrate"); err != nil {
		t.Fatal(err)
	}
	if c, err = NewCluster(ctx, bin, dsn, dir, p); err != nil {
		t.Fatal(err)
	}
	for name, n := range tasklists {
		if _, err := c.Helix(ctx, "tasklist", "put", "--domain", "e2e", name, strconv.Itoa(n)); err != nil {
			t.Fatal(err)
		}
	}
	return c
}
