package mysqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/helixcoord/helix/mysqlstore/mysqltest"
)

func TestSessionSettingsByFlavour(t *testing.T) {
	mariadb := map[string]bool{"idle_transaction_timeout": true, "max_statement_time": true, "wait_timeout": true}
	oracle := map[string]bool{"max_execution_time": true, "wait_timeout": true}
	bare := map[string]bool{"wait_timeout": true} // neither statement limit (e.g. an old or odd server)
	for _, c := range []struct {
		name        string
		have, fixed map[string]bool
		want        []string
	}{
		{"MariaDB", mariadb, nil, []string{"idle_transaction_timeout = 2", "max_statement_time = 5.000"}},
		{"Oracle MySQL", oracle, nil, []string{"wait_timeout = 3", "max_execution_time = 5000"}},
		{"no statement limit", bare, nil, []string{"wait_timeout = 3"}},
		{"DSN sets the idle limit", mariadb, map[string]bool{"idle_transaction_timeout": true}, []string{"max_statement_time = 5.000"}},
		{"DSN sets wait_timeout on MySQL", oracle, map[string]bool{"wait_timeout": true, "max_execution_time": true}, nil},
		{"nothing known", map[string]bool{}, nil, nil},
	} {
		got := sessionSettings(c.have, c.fixed)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
		for _, s := range got {
			name, _, _ := strings.Cut(s, " = ")
			if !c.have[name] {
				t.Errorf("%s: sets %s, which the server does not have (MySQL would refuse the whole SET)", c.name, name)
			}
		}
	}
}

// What a session limit cuts short was rolled back by the server: retry it.
func TestSessionLimitErrorsAreRetryable(t *testing.T) {
	for _, n := range []uint16{erLockWaitTimeout, erLockDeadlock, erStatementTimeout, erQueryTimeout, erConnectionKilled, erClientInactivity} {
		err := fmt.Errorf("wrapped: %w", &mysql.MySQLError{Number: n, Message: "x"})
		if !retryable(err) {
			t.Errorf("error %d is not retryable", n)
		}
	}
	if retryable(&mysql.MySQLError{Number: erDupEntry}) {
		t.Error("a duplicate key is retryable")
	}
}

func TestParseDSNKeepAliveAndLockWait(t *testing.T) {
	cfg, err := ParseDSN("u:p@tcp(h:1)/db")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DialFunc == nil || cfg.Params["innodb_lock_wait_timeout"] != "1" {
		t.Fatalf("ParseDSN: dial func set %v, innodb_lock_wait_timeout %q; want a keepalive dialer and 1", cfg.DialFunc != nil, cfg.Params["innodb_lock_wait_timeout"])
	}
	unix, err := ParseDSN("u:p@unix(/tmp/x.sock)/db")
	if err != nil {
		t.Fatal(err)
	}
	if unix.DialFunc != nil {
		t.Fatal("ParseDSN set a TCP dialer on a unix socket")
	}
}

// The pool must close idle connections itself exactly where the session got the short
// wait_timeout (servers without idle_transaction_timeout); elsewhere it keeps them, so
// that a node does not reconnect every second.
func TestShortWaitOnlyWithoutIdleTransactionTimeout(t *testing.T) {
	dsn := mysqltest.DSN(t)
	conn, _, err := Connector(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	var name, v string
	err = db.QueryRow("SHOW SESSION VARIABLES WHERE Variable_name = 'idle_transaction_timeout'").Scan(&name, &v)
	hasIdle := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		t.Fatal(err)
	}
	if got := conn.(*sessionConnector).shortWait.Load(); got == hasIdle {
		t.Fatalf("shortWait = %v on a server with idle_transaction_timeout %v", got, hasIdle)
	}
}

// Later connections get the limits from the tuned connector (no extra round trips), and
// a tuned connector the server refuses (error 1193: it lacks a variable it had) is
// dropped and the server asked again.
func TestTunedConnectorCarriesTheLimits(t *testing.T) {
	dsn := mysqltest.DSN(t)
	conn, _, err := Connector(dsn)
	if err != nil {
		t.Fatal(err)
	}
	sc := conn.(*sessionConnector)
	db := sql.OpenDB(conn)
	defer db.Close()
	ctx := context.Background()
	want := func(c *sql.Conn) {
		t.Helper()
		var lw int
		var stmt float64
		q := "SELECT @@SESSION.innodb_lock_wait_timeout, @@SESSION.max_statement_time"
		if err := c.QueryRowContext(ctx, "SELECT 1 FROM DUAL WHERE @@version LIKE '%MariaDB%'").Scan(new(int)); errors.Is(err, sql.ErrNoRows) {
			q = "SELECT @@SESSION.innodb_lock_wait_timeout, @@SESSION.max_execution_time / 1000"
		}
		if err := c.QueryRowContext(ctx, q).Scan(&lw, &stmt); err != nil {
			t.Fatal(err)
		}
		if lw != 1 || stmt != StatementTimeout.Seconds() {
			t.Fatalf("lock wait %d, statement limit %vs; want 1, %v", lw, stmt, StatementTimeout.Seconds())
		}
	}
	var conns []*sql.Conn
	for range 3 { // held at once: three physical connections
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want(c)
		conns = append(conns, c)
	}
	if sc.tuned.Load() == nil {
		t.Fatal("no tuned connector after the first connection")
	}
	// A tuned connector that names a variable the server lacks.
	cfg := sc.cfg.Clone()
	cfg.Params["helix_no_such_variable"] = "1"
	bad, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sc.tuned.Store(&bad)
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatalf("a connection after the server refused the tuned parameters: %v", err)
	}
	want(c)
	if p := sc.tuned.Load(); p == nil || *p == bad {
		t.Fatal("the refused tuned connector was kept")
	}
	for _, c := range append(conns, c) {
		c.Close()
	}
}
