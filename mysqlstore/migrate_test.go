package mysqlstore_test

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/mysqlstore"
	"github.com/helixcoord/helix/mysqlstore/mysqltest"
)

func TestMigrateIdempotent(t *testing.T) {
	dsn := mysqltest.DSN(t)
	db, _, err := mysqlstore.OpenDB(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, err := mysqlstore.Open(ctx, dsn, mysqlstore.Options{}); !errors.Is(err, mysqlstore.ErrSchemaOutdated) {
		t.Fatalf("Open before migrating: %v, want ErrSchemaOutdated", err)
	}
	latest := mysqlstore.LatestVersion()
	res, err := mysqlstore.Migrate(ctx, db)
	if err != nil || res.From != 0 || res.To != latest || len(res.Applied) != latest {
		t.Fatalf("first Migrate: %+v, %v", res, err)
	}
	res, err = mysqlstore.Migrate(ctx, db)
	if err != nil || res.From != latest || len(res.Applied) != 0 {
		t.Fatalf("second Migrate: %+v, %v; want nothing applied", res, err)
	}
	var tables int
	if err := db.QueryRow("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE 'helix\\_%'").Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 6 {
		t.Fatalf("%d helix_ tables, want 6", tables)
	}
	s, err := mysqlstore.Open(ctx, dsn, mysqlstore.Options{})
	if err != nil {
		t.Fatalf("Open after migrating: %v", err)
	}
	s.Close()
}

func TestMigrateConcurrent(t *testing.T) {
	dsn := mysqltest.DSN(t)
	const hosts = 6
	var wg sync.WaitGroup
	results := make([]mysqlstore.MigrateResult, hosts)
	errs := make([]error, hosts)
	for i := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, _, err := mysqlstore.OpenDB(dsn) // one pool each: separate sessions, like hosts
			if err != nil {
				errs[i] = err
				return
			}
			defer db.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			results[i], errs[i] = mysqlstore.Migrate(ctx, db)
		}()
	}
	wg.Wait()
	applied := 0
	for i := range hosts {
		if errs[i] != nil {
			t.Fatalf("host %d: %v", i, errs[i])
		}
		applied += len(results[i].Applied)
		if results[i].To != mysqlstore.LatestVersion() {
			t.Errorf("host %d ended at version %d", i, results[i].To)
		}
	}
	if applied != mysqlstore.LatestVersion() {
		t.Fatalf("%d migrations applied in total by %d hosts, want each exactly once (%d)", applied, hosts, mysqlstore.LatestVersion())
	}
}

func TestMigrateRefusesNewerSchema(t *testing.T) {
	dsn := migratedDSN(t)
	db, _, err := mysqlstore.OpenDB(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	newer := mysqlstore.LatestVersion() + 1
	if _, err := db.Exec("INSERT INTO helix_schema_migrations (version, name, applied_at) VALUES (?, 'from_the_future', UTC_TIMESTAMP(6))", newer); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = mysqlstore.Migrate(ctx, db)
	if !errors.Is(err, mysqlstore.ErrSchemaTooNew) || !strings.Contains(err.Error(), "upgrade helix") {
		t.Fatalf("Migrate on a newer schema: %v, want ErrSchemaTooNew telling to upgrade", err)
	}
	if _, err := mysqlstore.Open(ctx, dsn, mysqlstore.Options{}); !errors.Is(err, mysqlstore.ErrSchemaTooNew) {
		t.Fatalf("Open on a newer schema: %v, want ErrSchemaTooNew", err)
	}
}

func TestMigrateNeedsDatabase(t *testing.T) {
	db, _, err := mysqlstore.OpenDB(mysqltest.ServerDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := mysqlstore.Migrate(context.Background(), db); err == nil || !strings.Contains(err.Error(), "names no database") {
		t.Fatalf("Migrate without a database in the DSN: %v", err)
	}
}

// TestMigrateRerunsIndexMigration: a migration interrupted after its CREATE INDEX (DDL
// commits at once, the version row was never written) completes on the next run: the
// index that already exists counts as created.
func TestMigrateRerunsIndexMigration(t *testing.T) {
	dsn := migratedDSN(t)
	db, _, err := mysqlstore.OpenDB(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	var idx int
	if err := db.QueryRow("SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = 'helix_assignments' AND index_name = 'helix_assignments_by_target'").Scan(&idx); err != nil {
		t.Fatal(err)
	}
	if idx == 0 {
		t.Fatal("no index helix_assignments_by_target after migrating")
	}
	// Forget version 2 (the index) and everything after it: every later migration must
	// be re-runnable too.
	latest := mysqlstore.LatestVersion()
	if _, err := db.Exec("DELETE FROM helix_schema_migrations WHERE version >= 2"); err != nil {
		t.Fatal(err)
	}
	res, err := mysqlstore.Migrate(ctx, db)
	if err != nil || res.From != 1 || len(res.Applied) != latest-1 || res.To != latest {
		t.Fatalf("re-running migrations 2..%d over the existing index: %+v, %v", latest, res, err)
	}
}

// TestMigrationLockExcludesOtherHosts holds the migration lock from another session under
// the name earlier helix versions computed on the server (CONCAT('helix_migrate_',
// SHA1(DATABASE()))), and checks that Migrate waits for it and gives up. Oracle MySQL 9.x
// has no SHA1(), so there the name is computed the same way in Go: no earlier binary can
// have migrated such a server.
func TestMigrationLockExcludesOtherHosts(t *testing.T) {
	dsn := mysqltest.DSN(t)
	db, _, err := mysqlstore.OpenDB(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	holder, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	var name string
	if err := holder.QueryRowContext(ctx, "SELECT CONCAT('helix_migrate_', SHA1(DATABASE()))").Scan(&name); err != nil {
		var me *mysql.MySQLError
		if !errors.As(err, &me) || me.Number != 1305 { // ER_SP_DOES_NOT_EXIST: no SHA1() here
			t.Fatal(err)
		}
		var dbName string
		if err := holder.QueryRowContext(ctx, "SELECT DATABASE()").Scan(&dbName); err != nil {
			t.Fatal(err)
		}
		sum := sha1.Sum([]byte(dbName))
		name = "helix_migrate_" + hex.EncodeToString(sum[:])
		t.Logf("server has no SHA1(); lock name computed in Go: %s", name)
	}
	var got int
	if err := holder.QueryRowContext(ctx, "SELECT GET_LOCK(?, 0)", name).Scan(&got); err != nil || got != 1 {
		t.Fatalf("taking %s: %d, %v", name, got, err)
	}
	mctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	res, err := mysqlstore.Migrate(mctx, db)
	if !errors.Is(err, engine.ErrUnavailable) || !strings.Contains(err.Error(), "migration lock") || len(res.Applied) != 0 {
		t.Fatalf("Migrate while another session holds %s: %+v, %v; want the lock's ErrUnavailable and nothing applied", name, res, err)
	}
	if _, err := holder.ExecContext(ctx, "DO RELEASE_LOCK(?)", name); err != nil {
		t.Fatal(err)
	}
	if res, err := mysqlstore.Migrate(ctx, db); err != nil || res.To != mysqlstore.LatestVersion() {
		t.Fatalf("Migrate after the lock was released: %+v, %v", res, err)
	}
}
