package mysqlstore_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/mysqlstore"
	"github.com/helixcoord/helix/mysqlstore/mysqltest"
)

// hasVariable reports whether the server has the session variable name.
func hasVariable(t *testing.T, db *sql.DB, name string) bool {
	t.Helper()
	var n, v string
	err := db.QueryRow("SHOW SESSION VARIABLES WHERE Variable_name = ?", name).Scan(&n, &v)
	if errors.Is(err, sql.ErrNoRows) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// Every connection of an opened Store carries the session limits that fit the server's
// flavour: idle_transaction_timeout where it exists (MariaDB), else wait_timeout; a
// statement limit in the flavour's own unit.
func TestSessionLimitsApplied(t *testing.T) {
	dsn := mysqltest.DSN(t) // no schema needed
	db := limitedDB(t, dsn)
	var lockWait int
	if err := db.QueryRow("SELECT @@SESSION.innodb_lock_wait_timeout").Scan(&lockWait); err != nil {
		t.Fatal(err)
	}
	if lockWait != int(mysqlstore.LockWaitTimeout/time.Second) {
		t.Errorf("innodb_lock_wait_timeout = %d, want %v", lockWait, mysqlstore.LockWaitTimeout)
	}
	if hasVariable(t, db, "idle_transaction_timeout") {
		var idle int
		if err := db.QueryRow("SELECT @@SESSION.idle_transaction_timeout").Scan(&idle); err != nil {
			t.Fatal(err)
		}
		if idle != int(mysqlstore.IdleInTransactionTimeout/time.Second) {
			t.Errorf("idle_transaction_timeout = %d, want %v", idle, mysqlstore.IdleInTransactionTimeout)
		}
	} else {
		var wait int
		if err := db.QueryRow("SELECT @@SESSION.wait_timeout").Scan(&wait); err != nil {
			t.Fatal(err)
		}
		if wait != int(mysqlstore.IdleSessionTimeout/time.Second) {
			t.Errorf("wait_timeout = %d, want %v (no idle_transaction_timeout on this server)", wait, mysqlstore.IdleSessionTimeout)
		}
	}
	switch {
	case hasVariable(t, db, "max_statement_time"):
		var v float64
		if err := db.QueryRow("SELECT @@SESSION.max_statement_time").Scan(&v); err != nil {
			t.Fatal(err)
		}
		if v != mysqlstore.StatementTimeout.Seconds() {
			t.Errorf("max_statement_time = %v, want %v", v, mysqlstore.StatementTimeout.Seconds())
		}
	case hasVariable(t, db, "max_execution_time"):
		var v int64
		if err := db.QueryRow("SELECT @@SESSION.max_execution_time").Scan(&v); err != nil {
			t.Fatal(err)
		}
		if v != mysqlstore.StatementTimeout.Milliseconds() {
			t.Errorf("max_execution_time = %v, want %v", v, mysqlstore.StatementTimeout.Milliseconds())
		}
	}

	// Migrations run without them (DDL and GET_LOCK waits may take longer).
	plain, _, err := mysqlstore.OpenDB(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	var wait int
	if err := plain.QueryRow("SELECT @@SESSION.wait_timeout").Scan(&wait); err != nil {
		t.Fatal(err)
	}
	if wait == int(mysqlstore.IdleSessionTimeout/time.Second) {
		t.Errorf("OpenDB's session has wait_timeout %d: migrations must not get the store's limits", wait)
	}
}

// limitedDB is a pool on the store's Connector (the session limits), closed with the test.
func limitedDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	conn, _, err := mysqlstore.Connector(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	t.Cleanup(func() { db.Close() })
	return db
}

// A variable the DSN sets itself is the operator's choice: the store leaves it.
func TestSessionLimitsLeaveTheDSNsChoice(t *testing.T) {
	dsn := mysqltest.DSN(t)
	name, want := "idle_transaction_timeout", 7
	if !hasVariable(t, limitedDB(t, dsn), name) {
		name = "wait_timeout" // Oracle MySQL
	}
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	var got int
	if err := limitedDB(t, dsn+sep+name+"=7").QueryRow("SELECT @@SESSION." + name).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("%s = %d, want the DSN's %d", name, got, want)
	}
}

// The server ends a session that went silent inside a transaction, whatever the flavour
// (no helix schema needed): a row it locked is free for another connection within the
// idle limit, and the silent transaction can neither go on nor commit.
func TestSilentTransactionLosesItsLocks(t *testing.T) {
	dsn := mysqltest.DSN(t)
	db := limitedDB(t, dsn)
	if _, err := db.Exec("CREATE TABLE stall_probe (id INT PRIMARY KEY, v INT) ENGINE=InnoDB"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO stall_probe VALUES (1, 0)"); err != nil {
		t.Fatal(err)
	}
	bound := mysqlstore.IdleSessionTimeout
	if hasVariable(t, db, "idle_transaction_timeout") {
		bound = mysqlstore.IdleInTransactionTimeout
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec("UPDATE stall_probe SET v = 1 WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	other := limitedDB(t, dsn)
	took := untilDone(t, at, bound+3*time.Second, func(ctx context.Context) error {
		_, err := other.ExecContext(ctx, "UPDATE stall_probe SET v = 2 WHERE id = 1")
		return err
	})
	t.Logf("row locked by a silent transaction: free for another connection after %v (idle limit %v)", took.Round(time.Millisecond), bound)
	if took < bound-500*time.Millisecond || took > bound+2*time.Second {
		t.Errorf("the row was free after %v, want between the idle limit %v − 0.5s and it + 2s", took, bound)
	}
	if _, err := tx.Exec("UPDATE stall_probe SET v = 3 WHERE id = 1"); err == nil {
		t.Fatal("the silent transaction still runs statements after the server ended its session")
	}
	var v int
	if err := other.QueryRow("SELECT v FROM stall_probe WHERE id = 1").Scan(&v); err != nil || v != 2 {
		t.Fatalf("v = %d (%v), want 2: the silent transaction's write must have been rolled back", v, err)
	}
}

// stallWith opens a transaction on one of s's connections, takes the row lock of query,
// and then goes silent, as a frozen or cut-off client does. It returns the transaction
// and when the lock was taken.
func stallWith(t *testing.T, s *mysqlstore.Store, query string, args ...any) (*sql.Tx, time.Time) {
	t.Helper()
	tx, err := s.DB().BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(query, args...)
	if err != nil {
		t.Fatal(err)
	}
	rows.Close()
	return tx, time.Now()
}

// idleBound is how long the server lets a silent session keep its transaction, on this
// server's flavour.
func idleBound(t *testing.T, s *mysqlstore.Store) time.Duration {
	if hasVariable(t, s.DB(), "idle_transaction_timeout") {
		return mysqlstore.IdleInTransactionTimeout
	}
	return mysqlstore.IdleSessionTimeout
}

// untilDone calls op with the engine's per-call deadline until it succeeds, and returns
// how long after since that was.
func untilDone(t *testing.T, since time.Time, limit time.Duration, op func(ctx context.Context) error) time.Duration {
	t.Helper()
	var last error
	for time.Since(since) < limit {
		ctx, cancel := context.WithTimeout(context.Background(), engine.DefaultConfig().RequestTimeout)
		last = op(ctx)
		cancel()
		if last == nil {
			return time.Since(since)
		}
	}
	t.Fatalf("still failing %v after the stall: %v", limit, last)
	return 0
}

// A client that stalls holding the revision row (a worker frozen right after its
// release ack locked it) stops every other writer only until the server ends its
// silent session; the stalled transaction is rolled back and its next statement fails
// with an error the store retries.
func TestStalledTransactionReleasesRevisionRow(t *testing.T) {
	dsn := migratedDSN(t)
	ctx := context.Background()
	stalled := openStore(t, dsn, "default")
	other := openStore(t, dsn, "default")
	if _, err := other.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: "t", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	bound := idleBound(t, stalled)
	tx, at := stallWith(t, stalled, "SELECT revision FROM helix_revision WHERE cluster = ? FOR UPDATE", "default")
	defer tx.Rollback()
	took := untilDone(t, at, bound+3*time.Second, func(ctx context.Context) error {
		_, err := other.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: "t", Partitions: 2})
		return err
	})
	t.Logf("revision row held by a silent transaction: another writer got through %v after the stall (server idle limit %v)", took.Round(time.Millisecond), bound)
	if took < bound-500*time.Millisecond {
		t.Errorf("the writer got through after %v, before the idle limit %v: the stall did not hold the lock", took, bound)
	}
	if took > bound+2*time.Second {
		t.Errorf("the writer waited %v, want at most the idle limit %v + 2s", took, bound)
	}
	_, err := tx.Exec("UPDATE helix_revision SET revision = revision WHERE cluster = ?", "default")
	if err == nil {
		t.Fatal("the stalled transaction still runs statements after the server ended its session")
	}
	if err := tx.Commit(); err == nil {
		t.Fatal("the stalled transaction committed after the server ended its session")
	}
}

// The same for the lease row: a candidate frozen inside AcquireLease's transaction
// delays the holder's renewal only until the server ends the silent session.
func TestStalledTransactionReleasesLeaseRow(t *testing.T) {
	dsn := migratedDSN(t)
	ctx := context.Background()
	stalled := openStore(t, dsn, "default")
	holder := openStore(t, dsn, "default")
	l, err := holder.AcquireLease(ctx, "coordinator", "h", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	bound := idleBound(t, stalled)
	tx, at := stallWith(t, stalled, "SELECT epoch FROM helix_leases WHERE cluster = ? AND lock_key = ? FOR UPDATE", "default", "coordinator")
	defer tx.Rollback()
	took := untilDone(t, at, bound+3*time.Second, func(ctx context.Context) error {
		_, err := holder.RenewLease(ctx, "coordinator", "h", l.Lease.Epoch, time.Minute)
		return err
	})
	t.Logf("lease row held by a silent transaction: the holder renewed %v after the stall (server idle limit %v)", took.Round(time.Millisecond), bound)
	if took < bound-500*time.Millisecond || took > bound+2*time.Second {
		t.Errorf("renewal got through after %v, want between the idle limit %v − 0.5s and it + 2s", took, bound)
	}
}
