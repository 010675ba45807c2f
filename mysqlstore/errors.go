package mysqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/helixcoord/helix/engine"
)

// MySQL / MariaDB server error numbers that the store classifies.
const (
	erDupEntry          = 1062 // ER_DUP_ENTRY
	erDupKeyName        = 1061 // ER_DUP_KEYNAME (CREATE INDEX of an index that exists)
	erDupFieldName      = 1060 // ER_DUP_FIELDNAME (ADD COLUMN of a column that exists)
	erLockWaitTimeout   = 1205 // ER_LOCK_WAIT_TIMEOUT
	erLockDeadlock      = 1213 // ER_LOCK_DEADLOCK
	erOptionPrevents    = 1290 // ER_OPTION_PREVENTS_STATEMENT (--read-only)
	erReadOnlyTrx       = 1792 // ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
	erInnodbReadOnly    = 1836 // ER_READ_ONLY_MODE
	erNoSuchTable       = 1146 // ER_NO_SUCH_TABLE
	erBadField          = 1054 // ER_BAD_FIELD_ERROR
	erServerShutdown    = 1053 // ER_SERVER_SHUTDOWN
	erConCount          = 1040 // ER_CON_COUNT_ERROR (too many connections)
	erLockAbortedDeadlk = 1614 // ER_XA_RBDEADLOCK

	erUnknownSystemVariable = 1193 // ER_UNKNOWN_SYSTEM_VARIABLE (a SET of a variable this flavour lacks)
	erStatementTimeout      = 1969 // ER_STATEMENT_TIMEOUT (MariaDB max_statement_time)
	erQueryTimeout          = 3024 // ER_QUERY_TIMEOUT (MySQL max_execution_time)
	erConnectionKilled      = 1927 // ER_CONNECTION_KILLED (MariaDB: idle_transaction_timeout, KILL)
	erClientInactivity      = 4031 // ER_CLIENT_INTERACTION_TIMEOUT (MySQL: wait_timeout)
)

// ErrSchema: the database has no helix schema (or a broken one). Fatal: run `helix migrate`.
var ErrSchema = errors.New("helix schema missing or damaged (run `helix migrate`)")

var errInvalidDSN = errors.New("invalid DSN")

func errUnavailable(detail string) error {
	return fmt.Errorf("%s: %w", detail, engine.ErrUnavailable)
}

// errDuplicate wraps a duplicate-key error: a concurrent writer created the same row.
var errDuplicate = errors.New("duplicate key")

// retryable reports whether err is certain to have changed nothing and may be retried:
// deadlock, lock wait timeout, a statement stopped by the session's time limit (the
// statement was rolled back and so is our transaction, which we roll back), the server
// closing a session it found idle (it rolled the transaction back), and connection
// errors raised before a commit was sent (the server rolls back an open transaction when
// its connection dies).
func retryable(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		if me.Number == erLockNowait {
			return true
		}
		switch me.Number {
		case erLockDeadlock, erLockWaitTimeout, erLockAbortedDeadlk, erConCount, erServerShutdown,
			erStatementTimeout, erQueryTimeout, erConnectionKilled, erClientInactivity:
			return true
		}
		return false
	}
	return connectionError(err)
}

// connectionError: the connection broke or could not be made.
func connectionError(err error) bool {
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, mysql.ErrInvalidConn) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, sql.ErrConnDone) {
		return true
	}
	var ne net.Error // *net.OpError included
	return errors.As(err, &ne)
}

// classify maps a driver error to the contract's sentinels. The result always wraps the
// original error too, for detail; the DSN never appears in it.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, engine.ErrInvalid) || errors.Is(err, engine.ErrFenced) || errors.Is(err, engine.ErrConflict) ||
		errors.Is(err, engine.ErrNotFound) || errors.Is(err, engine.ErrNodeDead) || errors.Is(err, engine.ErrLeaseHeld) ||
		errors.Is(err, engine.ErrLeaseLost) || errors.Is(err, engine.ErrUnavailable) || errors.Is(err, ErrSchema) ||
		errors.Is(err, ErrSchemaTooNew) || errors.Is(err, ErrSchemaOutdated) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w (%w)", engine.ErrUnavailable, err)
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case erDupEntry:
			return fmt.Errorf("%w: %w (%w)", engine.ErrConflict, errDuplicate, err)
		case erOptionPrevents, erReadOnlyTrx, erInnodbReadOnly:
			return fmt.Errorf("server is read-only (demoted primary?): %w (%w)", engine.ErrUnavailable, err)
		case erNoSuchTable, erBadField:
			return fmt.Errorf("%w (%w)", ErrSchema, err)
		}
		// Any other server error (deadlock, lock wait timeout, interrupted, too many
		// connections, shutdown, …): the statement failed and changed nothing we know of.
	}
	return fmt.Errorf("%w (%w)", engine.ErrUnavailable, err)
}

// backoff is jittered exponential backoff ("full jitter"), bounded by ctx.
type backoff struct {
	attempt int
	base    time.Duration
	cap     time.Duration
	max     int // attempts
}

func newBackoff() *backoff {
	return &backoff{base: 5 * time.Millisecond, cap: 250 * time.Millisecond, max: 8}
}

// wait sleeps before the next attempt; false when attempts or ctx are exhausted (or the
// sleep would outlast ctx's deadline).
func (b *backoff) wait(ctx context.Context) bool {
	b.attempt++
	if b.attempt >= b.max {
		return false
	}
	d := min(b.cap, b.base<<(b.attempt-1))
	d = time.Duration(rand.Int64N(int64(d)) + 1)
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
