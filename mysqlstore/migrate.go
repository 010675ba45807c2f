package mysqlstore

import (
	"context"
	"crypto/sha1"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migration is one embedded schema step: migrations/NNNN_name.sql.
type Migration struct {
	Version    int
	Name       string
	Statements []string
}

// ErrSchemaTooNew: the database was migrated by a newer helix than this binary.
var ErrSchemaTooNew = errors.New("database schema is newer than this binary")

// ErrSchemaOutdated: the database is missing migrations this binary needs.
var ErrSchemaOutdated = errors.New("database schema is older than this binary: run `helix migrate`")

// Migrations returns the embedded migrations in version order.
func Migrations() []Migration {
	ms, err := loadMigrations(migrationFS)
	if err != nil {
		panic("mysqlstore: embedded migrations are broken: " + err.Error())
	}
	return ms
}

// LatestVersion is the schema version this binary expects.
func LatestVersion() int {
	ms := Migrations()
	return ms[len(ms)-1].Version
}

func loadMigrations(fsys fs.FS) ([]Migration, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, n := range names {
		base := path.Base(n)
		num, rest, ok := strings.Cut(strings.TrimSuffix(base, ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql", base)
		}
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: rest, Statements: splitSQL(string(b))})
	}
	slices.SortFunc(out, func(a, b Migration) int { return a.Version - b.Version })
	for i, m := range out {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration versions must be 1..N without gaps; found %d at position %d", m.Version, i+1)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no migrations embedded")
	}
	return out, nil
}

// splitSQL splits a migration file into statements at semicolons that end a line, after
// dropping -- comment lines. Migrations are written so that this is unambiguous.
func splitSQL(src string) []string {
	var stmts []string
	var cur strings.Builder
	for _, line := range strings.Split(src, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(t, ";") {
			s := strings.TrimSpace(cur.String())
			stmts = append(stmts, strings.TrimSuffix(s, ";"))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		stmts = append(stmts, s)
	}
	return stmts
}

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS helix_schema_migrations (
  version    INT          NOT NULL,
  name       VARCHAR(200) NOT NULL,
  applied_at DATETIME(6)  NOT NULL,
  PRIMARY KEY (version)
) ENGINE=InnoDB`

// MigrateResult says what Migrate did.
type MigrateResult struct {
	From, To int   // schema version before and after
	Applied  []int // versions applied by this call
}

// Migrate brings the database's schema up to LatestVersion. It is idempotent and safe to
// run from several hosts at once: a named server lock (GET_LOCK, per database) lets one
// caller migrate while the others wait and then find nothing to do. It refuses a
// database whose schema is newer than this binary (ErrSchemaTooNew). Every migration is
// written to be re-runnable (CREATE … IF NOT EXISTS; an index that already exists,
// error 1061, counts as created, since MySQL has no CREATE INDEX IF NOT EXISTS), because
// MySQL commits DDL implicitly: a migration interrupted half-way is completed by the
// next run.
func Migrate(ctx context.Context, db *sql.DB) (MigrateResult, error) {
	var res MigrateResult
	conn, err := db.Conn(ctx) // GET_LOCK belongs to a session: keep one connection
	if err != nil {
		return res, fmt.Errorf("migrate: connect: %w", classify(err))
	}
	defer conn.Close()

	var dbName sql.NullString
	if err := conn.QueryRowContext(ctx, "SELECT DATABASE()").Scan(&dbName); err != nil {
		return res, fmt.Errorf("migrate: %w", classify(err))
	}
	if !dbName.Valid || dbName.String == "" {
		return res, fmt.Errorf("migrate: the DSN names no database (append /dbname): %w", errInvalidDSN)
	}
	lock := migrationLockName(dbName.String)
	wait := 60
	if dl, ok := ctx.Deadline(); ok {
		wait = max(1, int(time.Until(dl).Seconds()))
	}
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", lock, wait).Scan(&got); err != nil {
		return res, fmt.Errorf("migrate: taking the migration lock: %w", classify(err))
	}
	if !got.Valid || got.Int64 != 1 {
		return res, fmt.Errorf("migrate: another host held the migration lock of database %q for %ds: %w", dbName.String, wait, errUnavailable("lock timeout"))
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "DO RELEASE_LOCK(?)", lock)

	if _, err := conn.ExecContext(ctx, createMigrationsTable); err != nil {
		return res, fmt.Errorf("migrate: %w", classify(err))
	}
	cur, err := schemaVersion(ctx, conn)
	if err != nil {
		return res, err
	}
	res.From, res.To = cur, cur
	ms := Migrations()
	latest := ms[len(ms)-1].Version
	if cur > latest {
		return res, fmt.Errorf("migrate: database %q is at schema version %d but this binary only knows versions up to %d; upgrade helix before migrating: %w", dbName.String, cur, latest, ErrSchemaTooNew)
	}
	for _, m := range ms[cur:] {
		for i, stmt := range m.Statements {
			if _, err := conn.ExecContext(ctx, stmt); err != nil && !isDupKeyName(err) {
				return res, fmt.Errorf("migrate: version %d (%s), statement %d: %w", m.Version, m.Name, i+1, classify(err))
			}
		}
		if _, err := conn.ExecContext(ctx, "INSERT INTO helix_schema_migrations (version, name, applied_at) VALUES (?, ?, UTC_TIMESTAMP(6))", m.Version, m.Name); err != nil {
			return res, fmt.Errorf("migrate: recording version %d: %w", m.Version, classify(err))
		}
		res.Applied = append(res.Applied, m.Version)
		res.To = m.Version
	}
	return res, nil
}

// migrationLockName is the GET_LOCK name that serialises migrations of database db. Lock
// names are limited to 64 characters, so the database name is hashed; the hash is taken
// here rather than with SQL's SHA1(), which Oracle MySQL 9.x no longer has. The name is
// the same one earlier versions computed on the server, so old and new binaries exclude
// each other.
func migrationLockName(db string) string {
	sum := sha1.Sum([]byte(db))
	return "helix_migrate_" + hex.EncodeToString(sum[:])
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func schemaVersion(ctx context.Context, q queryer) (int, error) {
	var v sql.NullInt64
	if err := q.QueryRowContext(ctx, "SELECT MAX(version) FROM helix_schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("reading schema version: %w", classify(err))
	}
	return int(v.Int64), nil
}

// SchemaVersion returns the database's schema version (0 if never migrated).
func SchemaVersion(ctx context.Context, db *sql.DB) (int, error) {
	var n int
	err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'helix_schema_migrations'").Scan(&n)
	if err != nil {
		return 0, classify(err)
	}
	if n == 0 {
		return 0, nil
	}
	return schemaVersion(ctx, db)
}

// CheckSchema returns nil if the database is exactly at LatestVersion, and a clear error
// (ErrSchemaOutdated or ErrSchemaTooNew) otherwise.
func CheckSchema(ctx context.Context, db *sql.DB) error {
	v, err := SchemaVersion(ctx, db)
	if err != nil {
		return err
	}
	latest := LatestVersion()
	switch {
	case v < latest:
		return fmt.Errorf("schema version %d, this binary needs %d: %w", v, latest, ErrSchemaOutdated)
	case v > latest:
		return fmt.Errorf("schema version %d, this binary knows up to %d; upgrade helix: %w", v, latest, ErrSchemaTooNew)
	}
	return nil
}

// isDupKeyName reports a CREATE INDEX of an index (or an ADD COLUMN of a column) that
// already exists: a re-run of a migration interrupted after that statement.
func isDupKeyName(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && (me.Number == erDupKeyName || me.Number == erDupFieldName)
}
