package mysqlstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"
	"github.com/go-sql-driver/mysql"
	"github.com/helixcoord/helix/engine"
)

// These tests drive every error path through go-sqlmock: each asserts what the caller
// sees, and — because sqlmock fails on any statement not expected, and every failed
// transaction must end in the expected ROLLBACK — that nothing partial was committed.

func newMock(t *testing.T) (*Store, sqlmock.Sqlmock) {
	t.Helper()
	contains := sqlmock.QueryMatcherFunc(func(expected, actual string) error {
		if !strings.Contains(actual, expected) {
			return fmt.Errorf("statement %q does not contain %q", actual, expected)
		}
		return nil
	})
	db, mock, err := sqlmock.New(sqlmock.QueryMatcherOption(contains))
	if err != nil {
		t.Fatal(err)
	}
	mock.MatchExpectationsInOrder(true)
	s, err := New(db, Options{Name: "mock"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := mock.ExpectationsWereMet(); err != nil {
			t.Errorf("unmet expectations: %v", err)
		}
		db.Close()
	})
	return s, mock
}

var (
	deadlock    = &mysql.MySQLError{Number: 1213, Message: "Deadlock found when trying to get lock; try restarting transaction"}
	lockWait    = &mysql.MySQLError{Number: 1205, Message: "Lock wait timeout exceeded; try restarting transaction"}
	readOnly    = &mysql.MySQLError{Number: 1290, Message: "The MariaDB server is running with the --read-only option"}
	readOnlyTrx = &mysql.MySQLError{Number: 1792, Message: "Cannot execute statement in a READ ONLY transaction"}
	dupKey      = &mysql.MySQLError{Number: 1062, Message: "Duplicate entry 'x' for key 'PRIMARY'"}
	serverNowUS = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixMicro()
	fixedBatch  = []byte("0123456789abcdef")
)

func fixBatchID(t *testing.T) {
	old := newBatchID
	newBatchID = func() []byte { return fixedBatch }
	t.Cleanup(func() { newBatchID = old })
}

func expectFence(mock sqlmock.Sqlmock, epoch uint64, status int, live int) {
	mock.ExpectQuery("FROM helix_leases WHERE cluster = ? AND lock_key = ? FOR UPDATE").
		WithArgs("default", "coordinator").
		WillReturnRows(sqlmock.NewRows([]string{"epoch", "status", "live", "now"}).AddRow(epoch, status, live, serverNowUS))
}

func expectRevisionLock(mock sqlmock.Sqlmock, rev uint64) {
	mock.ExpectQuery("SELECT revision, ").WithArgs("default").
		WillReturnRows(sqlmock.NewRows([]string{"revision", "now"}).AddRow(rev, serverNowUS))
}

// expectEmptyBatchTx is the whole transaction of a fenced batch with no changes.
func expectEmptyBatchTx(mock sqlmock.Sqlmock, commitErr error) {
	mock.ExpectBegin()
	expectRevisionLock(mock, 10)
	expectFence(mock, 5, 1, 1)
	mock.ExpectExec("UPDATE helix_leases SET last_batch = ?").WithArgs(fixedBatch, "default", "coordinator").WillReturnResult(sqlmock.NewResult(0, 1))
	if commitErr != nil {
		mock.ExpectCommit().WillReturnError(commitErr)
	} else {
		mock.ExpectCommit()
	}
}

var emptyBatch = engine.Batch{Fence: engine.Fence{Key: "coordinator", Epoch: 5}}

func TestMockApplyDeadlockRetried(t *testing.T) {
	fixBatchID(t)
	s, mock := newMock(t)
	mock.ExpectBegin()
	mock.ExpectQuery("FOR UPDATE").WillReturnError(deadlock)
	mock.ExpectRollback()
	expectEmptyBatchTx(mock, nil)
	r, err := s.Apply(context.Background(), emptyBatch)
	if err != nil {
		t.Fatalf("Apply after one deadlock: %v, want success on retry", err)
	}
	if r.Revision != 10 || !r.Now.Equal(time.UnixMicro(serverNowUS)) {
		t.Fatalf("reply %+v: want revision 10 and the server's clock", r)
	}
}

func TestMockApplyLockWaitTimeoutRetried(t *testing.T) {
	fixBatchID(t)
	s, mock := newMock(t)
	mock.ExpectBegin()
	mock.ExpectQuery("SELECT revision, ").WillReturnError(lockWait)
	mock.ExpectRollback()
	expectEmptyBatchTx(mock, nil)
	if _, err := s.Apply(context.Background(), emptyBatch); err != nil {
		t.Fatalf("Apply after a lock wait timeout: %v, want success on retry", err)
	}
}

// TestRetryableAcrossFlavours: a lock NOWAIT could not take is a lock wait timeout that
// came at once. Oracle MySQL and TiDB report it as 3572, MariaDB as 1205; both are
// retried, like a deadlock, and a duplicate key is not.
func TestRetryableAcrossFlavours(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&mysql.MySQLError{Number: 3572, Message: "Statement aborted because lock(s) could not be acquired immediately and NOWAIT is set."}, true},
		{lockWait, true},
		{deadlock, true},
		{dupKey, false},
	} {
		if got := retryable(c.err); got != c.want {
			t.Errorf("retryable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestMockApplyLostConnectionBeforeCommitRetried(t *testing.T) {
	fixBatchID(t)
	s, mock := newMock(t)
	mock.ExpectBegin()
	expectRevisionLock(mock, 10)
	expectFence(mock, 5, 1, 1)
	mock.ExpectExec("UPDATE helix_leases SET last_batch").WillReturnError(mysql.ErrInvalidConn)
	mock.ExpectRollback()
	expectEmptyBatchTx(mock, nil)
	if _, err := s.Apply(context.Background(), emptyBatch); err != nil {
		t.Fatalf("Apply after a connection lost before COMMIT: %v, want success on retry", err)
	}
}

func TestMockBeginBadConnRetried(t *testing.T) {
	fixBatchID(t)
	s, mock := newMock(t)
	// database/sql closes a connection that returned ErrBadConn; sqlmock forgets its
	// server once no connection is open, so keep one open for the whole test.
	hold, err := s.db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	// database/sql itself retries ErrBadConn a few times on fresh connections; the store
	// retries again with backoff. Fail more often than database/sql alone would absorb.
	for range 4 {
		mock.ExpectBegin().WillReturnError(driver.ErrBadConn)
	}
	expectEmptyBatchTx(mock, nil)
	if _, err := s.Apply(context.Background(), emptyBatch); err != nil {
		t.Fatalf("Apply after bad connections: %v, want success", err)
	}
}

func TestMockHeartbeatRetries(t *testing.T) {
	s, mock := newMock(t)
	hb := "UPDATE helix_nodes SET last_heartbeat = UTC_TIMESTAMP(6) WHERE cluster = ? AND id = ? AND incarnation = ? AND status = 0 AND assign_rev = ?"
	mock.ExpectExec(hb).WithArgs("default", "w1", 3, 7).WillReturnError(lockWait)
	mock.ExpectExec(hb).WithArgs("default", "w1", 3, 7).WillReturnError(deadlock)
	mock.ExpectExec(hb).WithArgs("default", "w1", 3, 7).WillReturnError(mysql.ErrInvalidConn)
	mock.ExpectExec(hb).WithArgs("default", "w1", 3, 7).WillReturnResult(sqlmock.NewResult(0, 1))
	r, err := s.Heartbeat(context.Background(), "w1", 3, 7)
	if err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	if r.Changed || r.AssignRevision != 7 {
		t.Fatalf("reply %+v: want unchanged at revision 7", r)
	}
}

func TestMockHeartbeatReadOnlyIsUnavailable(t *testing.T) {
	s, mock := newMock(t)
	mock.ExpectExec("UPDATE helix_nodes SET last_heartbeat").WillReturnError(readOnly)
	_, err := s.Heartbeat(context.Background(), "w1", 3, 7)
	if !errors.Is(err, engine.ErrUnavailable) || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("Heartbeat on a read-only server: %v, want ErrUnavailable naming read-only", err)
	}
}

func TestMockHeartbeatDead(t *testing.T) {
	s, mock := newMock(t)
	mock.ExpectExec("AND assign_rev = ?").WillReturnResult(sqlmock.NewResult(0, 0))
	mock.ExpectExec("AND incarnation = ? AND status = 0").WillReturnResult(sqlmock.NewResult(0, 0))
	if _, err := s.Heartbeat(context.Background(), "w1", 3, 7); !errors.Is(err, engine.ErrNodeDead) {
		t.Fatalf("Heartbeat of a dead incarnation: %v, want ErrNodeDead", err)
	}
}

func TestMockApplyReadOnlyRolledBack(t *testing.T) {
	fixBatchID(t)
	s, mock := newMock(t)
	mock.ExpectBegin()
	expectRevisionLock(mock, 10)
	expectFence(mock, 5, 1, 1)
	mock.ExpectExec("UPDATE helix_leases SET last_batch").WillReturnError(readOnlyTrx)
	mock.ExpectRollback()
	_, err := s.Apply(context.Background(), emptyBatch)
	if !errors.Is(err, engine.ErrUnavailable) || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("Apply on a read-only server: %v, want ErrUnavailable naming read-only", err)
	}
}

func TestMockApplyFencedRolledBack(t *testing.T) {
	for _, c := range []struct {
		name          string
		epoch         uint64
		status, alive int
	}{
		{"newer epoch", 6, 1, 1},
		{"expired", 5, 1, 0},
		{"released", 5, 0, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, mock := newMock(t)
			mock.ExpectBegin()
			expectRevisionLock(mock, 10)
			expectFence(mock, c.epoch, c.status, c.alive)
			mock.ExpectRollback()
			b := engine.Batch{Fence: engine.Fence{Key: "coordinator", Epoch: 5},
				Changes: []engine.Change{{Kind: engine.ChangeAssign, Partition: engine.PartitionID{Domain: "d", TaskList: "t"}, Owner: "w1", Incarnation: 1}}}
			if _, err := s.Apply(context.Background(), b); !errors.Is(err, engine.ErrFenced) {
				t.Fatalf("Apply: %v, want ErrFenced", err)
			}
		})
	}
	t.Run("no lease row", func(t *testing.T) {
		s, mock := newMock(t)
		mock.ExpectBegin()
		expectRevisionLock(mock, 10)
		mock.ExpectQuery("FOR UPDATE").WillReturnRows(sqlmock.NewRows([]string{"epoch", "status", "live", "now"}))
		mock.ExpectRollback()
		if _, err := s.Apply(context.Background(), emptyBatch); !errors.Is(err, engine.ErrFenced) {
			t.Fatalf("Apply: %v, want ErrFenced", err)
		}
	})
}

var rowCols = []string{"domain", "tasklist", "part_no", "owner_id", "incarnation", "generation", "state", "target", "epoch", "revision"}

func TestMockApplyConflictRolledBack(t *testing.T) {
	p := engine.PartitionID{Domain: "d", TaskList: "t", Partition: 2}
	assign := engine.Batch{Fence: engine.Fence{Key: "coordinator", Epoch: 5},
		Changes: []engine.Change{{Kind: engine.ChangeAssign, Partition: p, Revision: 3, Owner: "w1", Incarnation: 1}}}
	t.Run("row revision moved", func(t *testing.T) {
		s, mock := newMock(t)
		mock.ExpectBegin()
		expectRevisionLock(mock, 10)
		expectFence(mock, 5, 1, 1)
		mock.ExpectQuery("FROM helix_assignments WHERE cluster = ? AND ((domain = ? AND tasklist = ? AND part_no IN (?))) FOR UPDATE").
			WithArgs("default", "d", "t", 2).
			WillReturnRows(sqlmock.NewRows(rowCols).AddRow("d", "t", 2, "", 0, 4, 0, "", 4, 9))
		mock.ExpectQuery("FROM helix_nodes WHERE cluster = ? AND id IN (?) FOR UPDATE").WithArgs("default", "w1").
			WillReturnRows(sqlmock.NewRows([]string{"id", "incarnation", "status", "age"}).AddRow("w1", 1, 0, 1000))
		mock.ExpectQuery("FROM helix_tasklists").WillReturnRows(sqlmock.NewRows([]string{"domain", "name", "partitions"}).AddRow("d", "t", 4))
		mock.ExpectRollback()
		_, err := s.Apply(context.Background(), assign)
		if !errors.Is(err, engine.ErrConflict) || !strings.Contains(err.Error(), "revision 9, not 3") {
			t.Fatalf("Apply: %v, want ErrConflict naming the revisions", err)
		}
	})
	t.Run("row written by a later epoch", func(t *testing.T) {
		s, mock := newMock(t)
		mock.ExpectBegin()
		expectRevisionLock(mock, 10)
		expectFence(mock, 5, 1, 1)
		mock.ExpectQuery("FROM helix_assignments").
			WillReturnRows(sqlmock.NewRows(rowCols).AddRow("d", "t", 2, "", 0, 4, 0, "", 6, 3))
		mock.ExpectRollback()
		if _, err := s.Apply(context.Background(), assign); !errors.Is(err, engine.ErrFenced) {
			t.Fatalf("Apply: %v, want ErrFenced (row epoch 6 > batch epoch 5)", err)
		}
	})
	t.Run("dead node heartbeated", func(t *testing.T) {
		s, mock := newMock(t)
		b := engine.Batch{Fence: engine.Fence{Key: "coordinator", Epoch: 5}, DeadAfter: 5 * time.Second,
			Dead: []engine.DeadNode{{ID: "w1", Incarnation: 1}}}
		mock.ExpectBegin()
		expectRevisionLock(mock, 10)
		expectFence(mock, 5, 1, 1)
		mock.ExpectQuery("FROM helix_nodes").
			WillReturnRows(sqlmock.NewRows([]string{"id", "incarnation", "status", "age"}).AddRow("w1", 1, 0, 300_000)) // 300 ms old
		mock.ExpectRollback()
		_, err := s.Apply(context.Background(), b)
		if !errors.Is(err, engine.ErrConflict) || !strings.Contains(err.Error(), "300ms") {
			t.Fatalf("Apply: %v, want ErrConflict with the server-time heartbeat age", err)
		}
	})
	t.Run("multi-row update matched fewer rows", func(t *testing.T) {
		fixBatchID(t)
		s, mock := newMock(t)
		mock.ExpectBegin()
		expectRevisionLock(mock, 10)
		expectFence(mock, 5, 1, 1)
		mock.ExpectQuery("FROM helix_assignments").
			WillReturnRows(sqlmock.NewRows(rowCols).AddRow("d", "t", 2, "", 0, 4, 0, "", 4, 3))
		mock.ExpectQuery("FROM helix_nodes").
			WillReturnRows(sqlmock.NewRows([]string{"id", "incarnation", "status", "age"}).AddRow("w1", 1, 0, 1000))
		mock.ExpectQuery("FROM helix_tasklists").WillReturnRows(sqlmock.NewRows([]string{"domain", "name", "partitions"}).AddRow("d", "t", 4))
		mock.ExpectExec("UPDATE helix_assignments a JOIN (SELECT ? AS d").
			WithArgs("d", "t", 2, "w1", 1, 5, 1, "", 11, "default", 5, 5).
			WillReturnResult(sqlmock.NewResult(0, 0))
		mock.ExpectRollback()
		if _, err := s.Apply(context.Background(), assign); !errors.Is(err, engine.ErrConflict) {
			t.Fatalf("Apply: %v, want ErrConflict", err)
		}
	})
}

func TestMockApplyWritesAndCommits(t *testing.T) {
	fixBatchID(t)
	s, mock := newMock(t)
	p := engine.PartitionID{Domain: "d", TaskList: "t", Partition: 2}
	b := engine.Batch{Fence: engine.Fence{Key: "coordinator", Epoch: 5}, DeadAfter: time.Second,
		Dead:    []engine.DeadNode{{ID: "w0", Incarnation: 2}},
		Changes: []engine.Change{{Kind: engine.ChangeAssign, Partition: p, Revision: 3, Owner: "w1", Incarnation: 1}}}
	mock.ExpectBegin()
	expectRevisionLock(mock, 10)
	expectFence(mock, 5, 1, 1)
	mock.ExpectQuery("FROM helix_assignments").
		WillReturnRows(sqlmock.NewRows(rowCols).AddRow("d", "t", 2, "w0", 2, 4, 1, "", 4, 3))
	mock.ExpectQuery("FROM helix_nodes WHERE cluster = ? AND id IN (?, ?) FOR UPDATE").WithArgs("default", "w0", "w1").
		WillReturnRows(sqlmock.NewRows([]string{"id", "incarnation", "status", "age"}).AddRow("w0", 2, 0, 9_000_000).AddRow("w1", 1, 0, 1000))
	mock.ExpectQuery("FROM helix_tasklists").WillReturnRows(sqlmock.NewRows([]string{"domain", "name", "partitions"}).AddRow("d", "t", 4))
	mock.ExpectExec("UPDATE helix_nodes SET status = 1 WHERE cluster = ? AND id IN (?)").WithArgs("default", "w0").WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectExec("UPDATE helix_assignments a JOIN").
		WithArgs("d", "t", 2, "w1", 1, 5, 1, "", 11, "default", 5, 5).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectExec("UPDATE helix_nodes SET assign_rev = assign_rev + 1 WHERE cluster = ? AND id IN (?, ?)").WithArgs("default", "w0", "w1").WillReturnResult(sqlmock.NewResult(0, 2))
	mock.ExpectExec("UPDATE helix_revision r JOIN helix_leases l").WithArgs("coordinator", 11, fixedBatch, "default").WillReturnResult(sqlmock.NewResult(0, 2))
	mock.ExpectCommit()
	r, err := s.Apply(context.Background(), b)
	if err != nil || r.Revision != 11 {
		t.Fatalf("Apply: %+v, %v; want revision 11", r, err)
	}
}

func TestMockApplyAmbiguousCommit(t *testing.T) {
	markerCols := []string{"last_batch", "epoch"}
	t.Run("committed: resolved by the marker, not repeated", func(t *testing.T) {
		fixBatchID(t)
		s, mock := newMock(t)
		expectEmptyBatchTx(mock, mysql.ErrInvalidConn)
		mock.ExpectQuery("SELECT last_batch, epoch FROM helix_leases").WithArgs("default", "coordinator").
			WillReturnRows(sqlmock.NewRows(markerCols).AddRow(fixedBatch, 5))
		r, err := s.Apply(context.Background(), emptyBatch)
		if err != nil || r.Revision != 10 {
			t.Fatalf("Apply: %+v, %v; want success at revision 10 without a second transaction", r, err)
		}
	})
	t.Run("not committed: proven, then run again", func(t *testing.T) {
		fixBatchID(t)
		s, mock := newMock(t)
		expectEmptyBatchTx(mock, mysql.ErrInvalidConn)
		mock.ExpectQuery("SELECT last_batch, epoch FROM helix_leases").
			WillReturnRows(sqlmock.NewRows(markerCols).AddRow([]byte("previous-batch!!"), 5))
		expectEmptyBatchTx(mock, nil)
		if _, err := s.Apply(context.Background(), emptyBatch); err != nil {
			t.Fatalf("Apply: %v, want success on the proven-safe retry", err)
		}
	})
	t.Run("lease moved on: outcome unknown", func(t *testing.T) {
		fixBatchID(t)
		s, mock := newMock(t)
		expectEmptyBatchTx(mock, mysql.ErrInvalidConn)
		mock.ExpectQuery("SELECT last_batch, epoch FROM helix_leases").
			WillReturnRows(sqlmock.NewRows(markerCols).AddRow([]byte("someone-else!!!!"), 6))
		_, err := s.Apply(context.Background(), emptyBatch)
		if !errors.Is(err, engine.ErrUnavailable) || !strings.Contains(err.Error(), "unknown") {
			t.Fatalf("Apply: %v, want ErrUnavailable (outcome unknown)", err)
		}
	})
	t.Run("server refused the commit: not ambiguous", func(t *testing.T) {
		fixBatchID(t)
		s, mock := newMock(t)
		expectEmptyBatchTx(mock, deadlock)
		expectEmptyBatchTx(mock, nil)
		if _, err := s.Apply(context.Background(), emptyBatch); err != nil {
			t.Fatalf("Apply: %v, want success after a refused (so rolled back) commit", err)
		}
	})
}

func TestMockPutTaskListDuplicateKey(t *testing.T) {
	s, mock := newMock(t)
	mock.ExpectBegin()
	expectRevisionLock(mock, 0)
	mock.ExpectQuery("SELECT partitions FROM helix_tasklists").WillReturnRows(sqlmock.NewRows([]string{"partitions"}))
	mock.ExpectExec("INSERT INTO helix_tasklists").WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectQuery("SELECT part_no, state FROM helix_assignments").WillReturnRows(sqlmock.NewRows([]string{"part_no", "state"}))
	mock.ExpectExec("INSERT INTO helix_assignments").WithArgs("default", "d", "t", 0, 1, "default", "d", "t", 1, 2).WillReturnError(dupKey)
	mock.ExpectRollback()
	_, err := s.PutTaskList(context.Background(), engine.TaskList{Domain: "d", Name: "t", Partitions: 2})
	if !errors.Is(err, engine.ErrConflict) || !errors.Is(err, errDuplicate) {
		t.Fatalf("PutTaskList: %v, want ErrConflict (duplicate key)", err)
	}
}

func TestMockRegisterDuplicateRetried(t *testing.T) {
	s, mock := newMock(t)
	mock.ExpectBegin()
	nodeCols := []string{"incarnation", "status", "process", "host", "pid", "replace_process", "replace_host", "replace_pid", "last_heartbeat", "now"}
	mock.ExpectQuery("SELECT incarnation, ").WillReturnRows(sqlmock.NewRows(nodeCols))
	mock.ExpectQuery("SELECT " + nowUS).WillReturnRows(sqlmock.NewRows([]string{"now"}).AddRow(serverNowUS))
	mock.ExpectQuery("SELECT epoch FROM helix_leases WHERE cluster = ? AND lock_key = ? FOR UPDATE").
		WithArgs("default", incarnationFloorKey).WillReturnRows(sqlmock.NewRows([]string{"epoch"}))
	mock.ExpectExec("INSERT INTO helix_nodes").WithArgs("default", "w1", 1, 1, sqlmock.AnyArg(), sqlmock.AnyArg(), "", "", 0).WillReturnError(dupKey)
	mock.ExpectRollback()
	// The concurrent registration won; this one replaces it with the next incarnation.
	mock.ExpectBegin()
	mock.ExpectQuery("SELECT incarnation, ").WillReturnRows(sqlmock.NewRows(nodeCols).AddRow(1, 0, "", "", 0, "", "", 0, serverNowUS, serverNowUS))
	mock.ExpectExec("UPDATE helix_nodes SET incarnation = ?").WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectCommit()
	r, err := s.RegisterNode(context.Background(), engine.NodeSpec{ID: "w1", Capacity: 1})
	if err != nil || r.Incarnation != 2 {
		t.Fatalf("RegisterNode: %+v, %v; want incarnation 2", r, err)
	}
}

func TestMockAckReleaseAmbiguousCommit(t *testing.T) {
	s, mock := newMock(t)
	p := engine.PartitionID{Domain: "d", TaskList: "t", Partition: 1}
	mock.ExpectBegin()
	expectRevisionLock(mock, 20)
	mock.ExpectQuery("FROM helix_nodes").WillReturnRows(sqlmock.NewRows([]string{"id", "incarnation", "status", "age"}).AddRow("w1", 1, 0, 1000))
	mock.ExpectQuery("FROM helix_assignments").WillReturnRows(sqlmock.NewRows(rowCols).AddRow("d", "t", 1, "w1", 1, 7, 2, "w2", 5, 19))
	// The row, the revision, the owner and the target (the row stays on its way to w2)
	// in one statement.
	mock.ExpectExec("UPDATE helix_assignments a JOIN helix_revision r").WithArgs("w1", "w2", 21, 21, "default", "d", "t", 1).WillReturnResult(sqlmock.NewResult(0, 4))
	mock.ExpectCommit().WillReturnError(mysql.ErrInvalidConn)
	mock.ExpectQuery("SELECT revision FROM helix_assignments").WillReturnRows(sqlmock.NewRows([]string{"revision"}).AddRow(21))
	if _, err := s.AckRelease(context.Background(), engine.Ack{Partition: p, Node: "w1", Incarnation: 1, Generation: 7}); err != nil {
		t.Fatalf("AckRelease: %v, want success resolved by re-reading the row", err)
	}
}

func TestMockRetriesBoundedByContext(t *testing.T) {
	db, mock, err := sqlmock.New(sqlmock.QueryMatcherOption(sqlmock.QueryMatcherEqual))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, _ := New(db, Options{})
	// More deadlocks than the context leaves time to retry; the leftovers stay unmet.
	for range 50 {
		mock.ExpectExec("UPDATE helix_nodes SET last_heartbeat = UTC_TIMESTAMP(6) WHERE cluster = ? AND id = ? AND incarnation = ? AND status = 0 AND assign_rev = ?").WillReturnError(deadlock)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = s.Heartbeat(ctx, "w1", 1, 0)
	if !errors.Is(err, engine.ErrUnavailable) {
		t.Fatalf("Heartbeat under endless deadlocks: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Fatalf("gave up after %v, want within the context's 30ms (+ slack)", d)
	}
}

func TestMockValidationBeforeSQL(t *testing.T) {
	s, _ := newMock(t) // no expectations: any SQL fails the test
	ctx := context.Background()
	var ve *engine.ValidationError
	for name, err := range map[string]error{
		"acquire":  func() error { _, err := s.AcquireLease(ctx, "", "o", time.Second); return err }(),
		"ttl":      func() error { _, err := s.AcquireLease(ctx, "k", "o", 0); return err }(),
		"register": func() error { _, err := s.RegisterNode(ctx, engine.NodeSpec{ID: "a\x00b", Capacity: 1}); return err }(),
		"apply":    func() error { _, err := s.Apply(ctx, engine.Batch{Fence: engine.Fence{Key: "k"}}); return err }(),
		"put":      func() error { _, err := s.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: "t"}); return err }(),
	} {
		if !errors.As(err, &ve) {
			t.Errorf("%s: %v, want a *ValidationError", name, err)
		}
	}
}

func TestRedact(t *testing.T) {
	got := Redact("user:hunter2@tcp(db:3306)/helix?tls=true")
	if strings.Contains(got, "hunter2") || !strings.Contains(got, "db:3306") {
		t.Fatalf("Redact = %q", got)
	}
	_, err := ParseDSN("user:hunter2@tcp(db:3306/helix") // unbalanced
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("ParseDSN error %v: want an error without the password", err)
	}
	// Should a parse error ever echo the DSN, the password is still taken out of it.
	if got := redactMessage("bad DSN user:hunter2@tcp(db:3306/helix", "user:hunter2@tcp(db:3306/helix"); strings.Contains(got, "hunter2") {
		t.Fatalf("redactMessage of an unparseable DSN = %q: want no password", got)
	}
	cfg, err := ParseDSN("u:p@tcp(h:1)/db?innodb_lock_wait_timeout=7")
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.ClientFoundRows || !cfg.RejectReadOnly || !cfg.ParseTime || cfg.Params["innodb_lock_wait_timeout"] != "7" || cfg.Timeout == 0 {
		t.Fatalf("ParseDSN defaults: %+v", cfg)
	}
}

func TestMockReleaseLostReplyResolvedByReading(t *testing.T) {
	leaseCols := []string{"owner_id", "epoch", "expires", "status", "now"}
	t.Run("applied", func(t *testing.T) {
		s, mock := newMock(t)
		mock.ExpectExec("UPDATE helix_leases SET owner_id = ''").WillReturnError(mysql.ErrInvalidConn)
		mock.ExpectQuery("SELECT owner_id, epoch").WillReturnRows(sqlmock.NewRows(leaseCols).AddRow("", 4, serverNowUS, 0, serverNowUS))
		r, err := s.ReleaseLease(context.Background(), "coordinator", "me", 4)
		if err != nil || r.Lease.Status != engine.LeaseInactive {
			t.Fatalf("ReleaseLease: %+v, %v; want success (the row shows it was released)", r, err)
		}
	})
	t.Run("not applied: run again", func(t *testing.T) {
		s, mock := newMock(t)
		mock.ExpectExec("UPDATE helix_leases SET owner_id = ''").WillReturnError(mysql.ErrInvalidConn)
		mock.ExpectQuery("SELECT owner_id, epoch").WillReturnRows(sqlmock.NewRows(leaseCols).AddRow("me", 4, serverNowUS+10_000_000, 1, serverNowUS))
		mock.ExpectExec("UPDATE helix_leases SET owner_id = ''").WillReturnResult(sqlmock.NewResult(0, 1))
		mock.ExpectQuery("SELECT owner_id, epoch").WillReturnRows(sqlmock.NewRows(leaseCols).AddRow("", 4, serverNowUS, 0, serverNowUS))
		if _, err := s.ReleaseLease(context.Background(), "coordinator", "me", 4); err != nil {
			t.Fatalf("ReleaseLease: %v", err)
		}
	})
	t.Run("someone else holds it", func(t *testing.T) {
		s, mock := newMock(t)
		mock.ExpectExec("UPDATE helix_leases SET owner_id = ''").WillReturnError(mysql.ErrInvalidConn)
		mock.ExpectQuery("SELECT owner_id, epoch").WillReturnRows(sqlmock.NewRows(leaseCols).AddRow("other", 5, serverNowUS+10_000_000, 1, serverNowUS))
		if _, err := s.ReleaseLease(context.Background(), "coordinator", "me", 4); !errors.Is(err, engine.ErrLeaseLost) {
			t.Fatalf("ReleaseLease: %v, want ErrLeaseLost", err)
		}
	})
}

func TestMockAcquireAmbiguousCommit(t *testing.T) {
	leaseCols := []string{"owner_id", "epoch", "expires", "status", "now"}
	s, mock := newMock(t)
	// plain read: expired lease of someone else
	mock.ExpectQuery("SELECT owner_id, epoch").WillReturnRows(sqlmock.NewRows(leaseCols).AddRow("old", 7, serverNowUS-1, 1, serverNowUS))
	mock.ExpectBegin()
	mock.ExpectQuery("FOR UPDATE").WillReturnRows(sqlmock.NewRows(leaseCols).AddRow("old", 7, serverNowUS-1, 1, serverNowUS))
	mock.ExpectExec("UPDATE helix_leases SET owner_id = ?, epoch = ?").WithArgs("me", 8, sqlmock.AnyArg(), "default", "coordinator").WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectCommit().WillReturnError(mysql.ErrInvalidConn)
	// re-read: the row is exactly what we wrote
	mock.ExpectQuery("SELECT owner_id, epoch").WillReturnRows(sqlmock.NewRows(leaseCols).AddRow("me", 8, serverNowUS+6_000_000, 1, serverNowUS+1000))
	r, err := s.AcquireLease(context.Background(), "coordinator", "me", 6*time.Second)
	if err != nil || r.Lease.Epoch != 8 {
		t.Fatalf("AcquireLease: %+v, %v; want epoch 8 resolved by re-reading", r, err)
	}
}

// unionCols are the columns of readUnion's one SELECT.
var unionCols = []string{"k", "s1", "s2", "s3", "s4", "n1", "n2", "n3", "n4", "n5", "n6", "b"}

// TestMockHeartbeatSlowPathReadsIncoming: when the node's revision moved, the heartbeat
// is the two UPDATEs and ONE SELECT, which returns the node's rows and the partitions on
// their way to it (Releasing, or Unassigned after a release, with target = the node),
// sorted whatever order the server sends them in.
func TestMockHeartbeatSlowPathReadsIncoming(t *testing.T) {
	s, mock := newMock(t)
	mock.ExpectExec("AND assign_rev = ?").WithArgs("default", "w1", 3, 7).WillReturnResult(sqlmock.NewResult(0, 0))
	mock.ExpectExec("AND incarnation = ? AND status = 0").WithArgs("default", "w1", 3).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectQuery("WHERE cluster = ? AND owner_id = ? AND incarnation = ? AND state IN (1, 2) UNION ALL SELECT 4, domain, tasklist").
		WithArgs("default", "default", "w1", "default", "w1", "default", "w1", 3, "default", "w1").
		WillReturnRows(sqlmock.NewRows(unionCols).
			AddRow(0, "", "", "", "", 40, serverNowUS, 9, 1, 0, 0, "").
			AddRow(4, "d", "t", "", "", 5, 0, 0, 0, 0, 0, "").
			AddRow(3, "d", "t", "w1", "", 1, 3, 2, 1, 4, 30, "").
			AddRow(4, "d", "t", "", "", 2, 0, 0, 0, 0, 0, ""))
	r, err := s.Heartbeat(context.Background(), "w1", 3, 7)
	if err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	want := []engine.PartitionID{{Domain: "d", TaskList: "t", Partition: 2}, {Domain: "d", TaskList: "t", Partition: 5}}
	if !r.Changed || r.AssignRevision != 9 || len(r.Assignments) != 1 || r.Assignments[0].Partition.Partition != 1 ||
		fmt.Sprint(r.Incoming) != fmt.Sprint(want) || !r.Draining {
		t.Fatalf("reply %+v: want Changed at 9 with row d/t/1, incoming %v and the draining flag", r, want)
	}
}

// TestMockApplyReleaseBumpsTarget: a release towards w2 bumps the owner's and the
// target's assignment revisions in one multi-row statement (the target's row is not
// locked beforehand: nothing is checked about it).
func TestMockApplyReleaseBumpsTarget(t *testing.T) {
	fixBatchID(t)
	s, mock := newMock(t)
	p := engine.PartitionID{Domain: "d", TaskList: "t", Partition: 2}
	b := engine.Batch{Fence: engine.Fence{Key: "coordinator", Epoch: 5},
		Changes: []engine.Change{{Kind: engine.ChangeRelease, Partition: p, Revision: 3, Target: "w2"}}}
	mock.ExpectBegin()
	expectRevisionLock(mock, 10)
	expectFence(mock, 5, 1, 1)
	mock.ExpectQuery("FROM helix_assignments").
		WillReturnRows(sqlmock.NewRows(rowCols).AddRow("d", "t", 2, "w1", 1, 4, 1, "", 4, 3))
	mock.ExpectQuery("FROM helix_nodes WHERE cluster = ? AND id IN (?) FOR UPDATE").WithArgs("default", "w1").
		WillReturnRows(sqlmock.NewRows([]string{"id", "incarnation", "status", "age"}).AddRow("w1", 1, 0, 1000))
	mock.ExpectExec("UPDATE helix_assignments a JOIN").
		WithArgs("d", "t", 2, "w1", 1, 4, 2, "w2", 11, "default", 5, 5).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectExec("UPDATE helix_nodes SET assign_rev = assign_rev + 1 WHERE cluster = ? AND id IN (?, ?)").WithArgs("default", "w1", "w2").WillReturnResult(sqlmock.NewResult(0, 2))
	mock.ExpectExec("UPDATE helix_revision r JOIN helix_leases l").WithArgs("coordinator", 11, fixedBatch, "default").WillReturnResult(sqlmock.NewResult(0, 2))
	mock.ExpectCommit()
	if r, err := s.Apply(context.Background(), b); err != nil || r.Revision != 11 {
		t.Fatalf("Apply: %+v, %v; want revision 11", r, err)
	}
}
