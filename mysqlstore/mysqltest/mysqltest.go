// Package mysqltest gives tests a private MySQL/MariaDB database: a fresh database with
// a unique name on the server named by HELIX_TEST_MYSQL_DSN, dropped when the test ends.
// Without that variable it starts MySQL 8 with testcontainers-go where Docker works, and
// otherwise skips the test loudly — except when CI is set, where a missing database is a
// failure, never a skip.
//
// It is a test helper: only _test.go files import it (production code never does, so
// testcontainers never reaches the helix binary).
package mysqltest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// EnvDSN names the variable holding the server DSN (no database, e.g.
// "root@tcp(127.0.0.1:3306)/").
const EnvDSN = "HELIX_TEST_MYSQL_DSN"

var (
	containerOnce sync.Once
	containerDSN  string
	containerErr  error
)

// ServerDSN returns the server DSN from EnvDSN or a MySQL 8 container, or skips (fails
// under CI) the test.
func ServerDSN(t testing.TB) string {
	t.Helper()
	if d := os.Getenv(EnvDSN); d != "" {
		return d
	}
	containerOnce.Do(func() { containerDSN, containerErr = startContainer() })
	if containerErr != nil {
		msg := fmt.Sprintf("NO MYSQL FOR THIS TEST: %s is not set and no MySQL 8 container could be started (%v). "+
			"Set %s='root@tcp(127.0.0.1:3306)/' to run it against a local server.", EnvDSN, containerErr, EnvDSN)
		if os.Getenv("CI") != "" {
			t.Fatal(msg + " (CI is set: a missing database is a failure)")
		}
		t.Skip(msg)
	}
	return containerDSN
}

func startContainer() (dsn string, err error) {
	defer func() {
		// Some testcontainers paths panic when no Docker daemon can be found.
		if r := recover(); r != nil {
			err = fmt.Errorf("testcontainers: %v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := testcontainers.Run(ctx, "mysql:8.0",
		testcontainers.WithEnv(map[string]string{"MYSQL_ALLOW_EMPTY_PASSWORD": "yes"}),
		testcontainers.WithExposedPorts("3306/tcp"),
		testcontainers.WithWaitStrategy(wait.ForLog("port: 3306  MySQL Community Server").WithStartupTimeout(2*time.Minute)),
	)
	if err != nil {
		return "", err
	}
	// The container lives as long as the test binary (Ryuk reaps it).
	host, err := c.Host(ctx)
	if err != nil {
		return "", err
	}
	port, err := c.MappedPort(ctx, "3306/tcp")
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("root@tcp(%s:%s)/", host, port.Port()), nil
}

// DSN creates a database with a unique name for this test and returns a DSN naming it.
// The database is dropped when the test ends.
func DSN(t testing.TB) string {
	t.Helper()
	return NewDatabase(t, ServerDSN(t))
}

// NewDatabase creates a database with a unique name on the server of serverDSN (for a
// DSN from another variable, e.g. a benchmark's) and returns a DSN naming it. The
// database is dropped when the test ends.
func NewDatabase(t testing.TB, serverDSN string) string {
	t.Helper()
	cfg, err := mysql.ParseDSN(serverDSN)
	if err != nil {
		t.Fatalf("server DSN does not parse: %v", err)
	}
	cfg.DBName = ""
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	name := "helix_test_" + hex.EncodeToString(rnd[:])
	admin, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		t.Fatalf("creating test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
			t.Errorf("dropping test database %s: %v", name, err)
		}
		admin.Close()
	})
	cfg.DBName = name
	return cfg.FormatDSN()
}
