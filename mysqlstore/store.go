package mysqlstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/helixcoord/helix/engine"
)

// DefaultCluster is the cluster a Store uses unless Options.Cluster says otherwise.
const DefaultCluster = "default"

// Options configure a Store.
type Options struct {
	// Cluster names the helix cluster inside the database (several may share one).
	// Default "default". Validated like every name (1–128 bytes, no control characters).
	Cluster string
	// Name describes the server in errors (Open sets it to user@net(addr)/db, without
	// the password).
	Name string
}

// Store is engine.Store on MySQL / MariaDB. Safe for concurrent use.
type Store struct {
	db      *sql.DB
	cluster string
	name    string
	// offset is the server clock minus the local clock, in nanoseconds, measured on the
	// last reply that read the server's clock; only the heartbeat fast path uses it.
	offset atomic.Int64
}

var _ engine.Store = (*Store)(nil)

// ParseDSN parses dsn and applies the store's defaults: clientFoundRows (an unchanged
// row still counts as matched), rejectReadOnly (never write to a demoted primary),
// parseTime, loc=UTC, interpolateParams (one round trip per statement; values are still
// passed separately from the SQL and escaped by the driver), TCP keepalive on the
// connections it dials (see keepAlive; unless the DSN names its own registered network),
// and, unless the DSN sets them, timeout=5s, readTimeout=30s, writeTimeout=30s, and
// innodb_lock_wait_timeout=1 for the session (LockWaitTimeout: a lock wait fails fast and
// is retried instead of outliving the caller's deadline).
func ParseDSN(dsn string) (*mysql.Config, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		// The driver's parse errors do not echo the DSN, but be sure: never wrap it.
		return nil, fmt.Errorf("%w: %s", errInvalidDSN, redactMessage(err.Error(), dsn))
	}
	cfg.ClientFoundRows = true
	cfg.RejectReadOnly = true
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	cfg.InterpolateParams = true
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = 30 * time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	if _, ok := cfg.Params["innodb_lock_wait_timeout"]; !ok {
		cfg.Params["innodb_lock_wait_timeout"] = strconv.Itoa(int(LockWaitTimeout / time.Second))
	}
	if cfg.DialFunc == nil && (cfg.Net == "tcp" || cfg.Net == "tcp4" || cfg.Net == "tcp6") {
		cfg.DialFunc = dialKeepAlive
	}
	return cfg, nil
}

// Redact returns dsn with its password replaced, for logs and errors. A DSN that does
// not parse is reduced to "<unparseable DSN>".
func Redact(dsn string) string {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "<unparseable DSN>"
	}
	return redactConfig(cfg)
}

func redactConfig(cfg *mysql.Config) string {
	c := cfg.Clone()
	if c.Passwd != "" {
		c.Passwd = "xxxxx"
	}
	return c.FormatDSN()
}

// redactMessage removes dsn's password from msg. A DSN that does not parse (ParseDSN's
// own error path) is split the way the driver reads it: user:password@ before the last
// '@' ahead of the last '/'.
func redactMessage(msg, dsn string) string {
	var pw string
	if cfg, err := mysql.ParseDSN(dsn); err == nil {
		pw = cfg.Passwd
	} else {
		head := dsn
		if i := strings.LastIndexByte(head, '/'); i >= 0 {
			head = head[:i]
		}
		if i := strings.LastIndexByte(head, '@'); i >= 0 {
			_, pw, _ = strings.Cut(head[:i], ":")
		}
	}
	if pw != "" {
		msg = strings.ReplaceAll(msg, pw, "xxxxx")
	}
	return msg
}

// Connector returns a driver.Connector for dsn with ParseDSN's defaults and the store's
// session time limits (IdleInTransactionTimeout or IdleSessionTimeout, StatementTimeout;
// see applySession), and a name for the server without the password
// (user@net(addr)/db), for callers that wrap the driver (instrumentation) before
// sql.OpenDB and New. On a server without idle_transaction_timeout (Oracle MySQL) such
// callers should also bound the pool's idle time as Open does
// (db.SetConnMaxIdleTime(PoolIdleTimeout)).
func Connector(dsn string) (driver.Connector, string, error) {
	conn, name, err := plainConnector(dsn)
	if err != nil {
		return nil, name, err
	}
	cfg, _ := ParseDSN(dsn) // parsed once already
	fixed := map[string]bool{}
	for k := range cfg.Params {
		fixed[strings.ToLower(k)] = true
	}
	return &sessionConnector{cfg: cfg, inner: conn, fixed: fixed}, name, nil
}

// plainConnector is Connector without the session time limits: for migrations, whose
// DDL and GET_LOCK waits may rightly take longer than any statement of the store.
func plainConnector(dsn string) (driver.Connector, string, error) {
	cfg, err := ParseDSN(dsn)
	if err != nil {
		return nil, "<invalid DSN>", err
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, shortName(cfg), fmt.Errorf("%w: %s", errInvalidDSN, redactMessage(err.Error(), dsn))
	}
	return conn, shortName(cfg), nil
}

// shortName names the server in errors: user@net(addr)/db, never the password.
func shortName(cfg *mysql.Config) string {
	return fmt.Sprintf("%s@%s(%s)/%s", cfg.User, cfg.Net, cfg.Addr, cfg.DBName)
}

// OpenDB opens a *sql.DB for dsn with ParseDSN's defaults, without checking the schema
// and without the store's session time limits (for Migrate).
func OpenDB(dsn string) (*sql.DB, string, error) {
	conn, name, err := plainConnector(dsn)
	if err != nil {
		return nil, name, err
	}
	return sql.OpenDB(conn), name, nil
}

// Open connects to dsn, checks that the schema is exactly at LatestVersion, and returns
// a Store. The DSN's password never appears in its errors.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	conn, name, err := Connector(dsn)
	if err != nil {
		return nil, fmt.Errorf("mysqlstore: open: %w", err)
	}
	db := sql.OpenDB(conn)
	if opts.Name == "" {
		opts.Name = name
	}
	s, err := New(db, opts)
	if err != nil {
		db.Close()
		return nil, err
	}
	if err := CheckSchema(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("mysqlstore: open %s: %w", opts.Name, err)
	}
	if sc, ok := conn.(*sessionConnector); ok && sc.shortWait.Load() {
		// The server ends any session idle IdleSessionTimeout (no idle-in-transaction
		// limit there): the pool closes idle connections first. CheckSchema connected, so
		// the flavour is known.
		db.SetConnMaxIdleTime(PoolIdleTimeout)
	}
	return s, nil
}

// New wraps an open *sql.DB (configured with ParseDSN's defaults, or a test double). It
// does no IO.
func New(db *sql.DB, opts Options) (*Store, error) {
	if opts.Cluster == "" {
		opts.Cluster = DefaultCluster
	}
	if err := engine.ValidateName("options.cluster", opts.Cluster); err != nil {
		return nil, err
	}
	if opts.Name == "" {
		opts.Name = "mysql"
	}
	return &Store{db: db, cluster: opts.Cluster, name: opts.Name}, nil
}

// DB returns the underlying pool.
func (s *Store) DB() *sql.DB { return s.db }

// Cluster returns the cluster this store reads and writes.
func (s *Store) Cluster() string { return s.cluster }

// Close closes the pool.
func (s *Store) Close() error { return s.db.Close() }

func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var ve *engine.ValidationError
	if errors.As(err, &ve) {
		return err
	}
	return fmt.Errorf("mysqlstore %s: %s: %w", s.name, op, classify(err))
}

// ---- time ----

// us is the SQL for a DATETIME as microseconds since the Unix epoch, independent of the
// session time zone.
func us(expr string) string {
	return "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', " + expr + ")"
}

var nowUS = us("UTC_TIMESTAMP(6)")

func fromUS(v int64) time.Time { return time.UnixMicro(v).UTC() }

// observe records the server clock (micros) read by a statement sent at start.
func (s *Store) observe(serverUS int64, start time.Time) time.Time {
	server := fromUS(serverUS)
	mid := start.Add(time.Since(start) / 2)
	s.offset.Store(int64(server.Sub(mid)))
	return server
}

// estimatedNow is the local clock corrected by the last measured server offset.
func (s *Store) estimatedNow() time.Time {
	return time.Now().Add(time.Duration(s.offset.Load())).UTC().Truncate(time.Microsecond)
}

// ---- transactions ----

type ambiguousCommit struct{ err error }

func (a *ambiguousCommit) Error() string { return "commit outcome unknown: " + a.err.Error() }
func (a *ambiguousCommit) Unwrap() error { return a.err }

// retryNow marks an error the transaction body knows to be safe to retry (a duplicate key
// from a concurrent creator of the same row).
type retryNow struct{ err error }

func (r *retryNow) Error() string { return r.err.Error() }
func (r *retryNow) Unwrap() error { return r.err }

func isDup(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == erDupEntry
}

// resolver decides, after an ambiguous commit, whether the transaction committed.
type resolver func(ctx context.Context) (committed bool, err error)

// inTx runs fn in a transaction, retrying what is safe to retry (see retryable), and
// resolving an ambiguous commit with resolve (nil: report ErrUnavailable).
func (s *Store) inTx(ctx context.Context, op string, fn func(tx *sql.Tx) error, resolve resolver) error {
	bo := newBackoff()
	for {
		err := s.tryTx(ctx, fn)
		if err == nil {
			return nil
		}
		var amb *ambiguousCommit
		if errors.As(err, &amb) {
			if resolve == nil || ctx.Err() != nil {
				return s.wrap(op, fmt.Errorf("%w: %w", engine.ErrUnavailable, err))
			}
			committed, rerr := s.resolve(ctx, resolve)
			if rerr != nil {
				return s.wrap(op, fmt.Errorf("%w: %w; re-reading it failed: %w", engine.ErrUnavailable, err, rerr))
			}
			if committed {
				return nil
			}
			// Proven not committed: running it again is not a blind repeat.
			if !bo.wait(ctx) {
				return s.wrap(op, fmt.Errorf("%w: %w (not committed; out of retries)", engine.ErrUnavailable, err))
			}
			continue
		}
		var rn *retryNow
		if (errors.As(err, &rn) || retryable(err)) && bo.wait(ctx) {
			continue
		}
		return s.wrap(op, err)
	}
}

func (s *Store) resolve(ctx context.Context, r resolver) (bool, error) {
	bo := newBackoff()
	for {
		ok, err := r(ctx)
		if err == nil {
			return ok, nil
		}
		if !retryable(err) || !bo.wait(ctx) {
			return false, err
		}
	}
}

func (s *Store) tryTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		var me *mysql.MySQLError
		if errors.As(err, &me) {
			// The server answered the COMMIT with an error: it did not commit.
			return err
		}
		return &ambiguousCommit{err: err}
	}
	return nil
}

// exec runs one idempotent autocommit statement, retrying what is safe to retry.
func (s *Store) exec(ctx context.Context, query string, args ...any) (int64, error) {
	bo := newBackoff()
	for {
		res, err := s.db.ExecContext(ctx, query, args...)
		if err == nil {
			return res.RowsAffected()
		}
		if !retryable(err) || !bo.wait(ctx) {
			return 0, err
		}
	}
}

// queryRow runs one read, retrying what is safe to retry; scan is called with the row.
func (s *Store) queryRow(ctx context.Context, query string, args []any, dest ...any) error {
	bo := newBackoff()
	for {
		err := s.db.QueryRowContext(ctx, query, args...).Scan(dest...)
		if err == nil || errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if !retryable(err) || !bo.wait(ctx) {
			return err
		}
	}
}

func (s *Store) serverNow(ctx context.Context) (time.Time, error) {
	start := time.Now()
	var v int64
	if err := s.queryRow(ctx, "SELECT "+nowUS, nil, &v); err != nil {
		return time.Time{}, err
	}
	return s.observe(v, start), nil
}

// newBatchID draws the random id Apply writes on the lease row (a variable so tests can fix it).
var newBatchID = func() []byte {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return b
}
