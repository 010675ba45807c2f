package mysqlstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
)

// A client that stalls inside a transaction — its process frozen (SIGSTOP, a long GC or
// VM pause), its network cut, or its connection gone while the server never saw the FIN —
// keeps that transaction's row locks for as long as the server keeps its session. With
// default server settings that is wait_timeout (8 hours). Every other node then waits on
// the lease row or the revision row. These per-session limits bound it; the server's
// global settings are never touched.
const (
	// LockWaitTimeout is innodb_lock_wait_timeout (whole seconds, 1 is the minimum): a
	// lock wait fails fast with error 1205 and is retried, instead of outliving the
	// caller's deadline while holding the locks its transaction already took.
	LockWaitTimeout = time.Second
	// IdleInTransactionTimeout is how long the server lets a session sit silent inside
	// an open transaction before it closes it and rolls the transaction back (MariaDB
	// idle_transaction_timeout). helix never waits on anything but the network between
	// the statements of a transaction, and every store call has a deadline under a
	// second, so a transaction idle this long has been abandoned by its client.
	IdleInTransactionTimeout = 2 * time.Second
	// IdleSessionTimeout is wait_timeout on servers without an idle-in-transaction limit
	// (Oracle MySQL): there the only way the server ends a silent session is to end any
	// silent session, so the pool closes idle connections well before (PoolIdleTimeout).
	IdleSessionTimeout = 3 * time.Second
	// PoolIdleTimeout is how long Open's pool keeps a connection unused where the
	// session has the short wait_timeout: database/sql's cleaner closes it within about
	// one more second, before the server would (IdleSessionTimeout), and a connection
	// reused every heartbeat is never closed. On servers with an idle-in-transaction
	// limit the pool keeps idle connections as long as it likes.
	PoolIdleTimeout = 1500 * time.Millisecond
	// StatementTimeout bounds one statement on the server (MariaDB max_statement_time,
	// every statement; MySQL max_execution_time, SELECTs only): a statement whose client
	// gave up (its deadline closed the connection) stops there instead of running on.
	StatementTimeout = 5 * time.Second
)

// keepAlive is TCP keepalive on every connection the store dials: a connection whose
// peer vanished (host down, network cut) is found dead within about Idle +
// Interval·Count while idle in the pool, instead of the kernel default of hours.
var keepAlive = net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: time.Second, Count: 3}

// dialKeepAlive is the driver's dialer with keepalive set.
func dialKeepAlive(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{KeepAliveConfig: keepAlive}
	return d.DialContext(ctx, network, addr)
}

// sessionVars are the server variables applySession may set, by name.
var sessionVars = []string{"idle_transaction_timeout", "max_statement_time", "max_execution_time", "wait_timeout"}

// sessionConnector gives every connection the session limits. The first connection
// asks the server which variables it has (applySession: two round trips); later ones
// are opened by a connector whose DSN parameters carry the chosen assignments, so the
// driver sets them in the one SET it sends anyway.
type sessionConnector struct {
	cfg   *mysql.Config    // ParseDSN's result
	inner driver.Connector // cfg as is
	// fixed holds the variables the DSN sets itself: the operator's choice stands.
	fixed map[string]bool
	// tuned is cfg with the chosen assignments among its parameters, once known.
	tuned atomic.Pointer[driver.Connector]
	// shortWait: a connection got the short wait_timeout (the pool must close idle
	// connections before the server does).
	shortWait atomic.Bool
}

func (c *sessionConnector) Driver() driver.Driver { return c.inner.Driver() }

func (c *sessionConnector) Connect(ctx context.Context) (driver.Conn, error) {
	if tc := c.tuned.Load(); tc != nil {
		conn, err := (*tc).Connect(ctx)
		var me *mysql.MySQLError
		if !(errors.As(err, &me) && me.Number == erUnknownSystemVariable) {
			return conn, err
		}
		// The server no longer has a variable it had (a failover to another flavour):
		// ask again.
		c.tuned.CompareAndSwap(tc, nil)
	}
	conn, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	set, err := applySession(ctx, conn, c.fixed)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("setting the session's time limits: %w", err)
	}
	cfg := c.cfg.Clone()
	for _, a := range set {
		name, v, _ := strings.Cut(a, " = ")
		cfg.Params[name] = v
		if name == "wait_timeout" {
			c.shortWait.Store(true)
		}
	}
	if tc, err := mysql.NewConnector(cfg); err == nil {
		c.tuned.Store(&tc)
	}
	return conn, nil
}

// sessionSettings chooses the SET assignments for a server that has the variables in
// have, leaving alone those in fixed. Oracle MySQL rejects an unknown variable (error
// 1193), so only variables the server reported are ever named.
func sessionSettings(have, fixed map[string]bool) []string {
	var set []string
	add := func(name string, v string) {
		if have[name] && !fixed[name] {
			set = append(set, name+" = "+v)
		}
	}
	secs := func(d time.Duration) string { return strconv.Itoa(int(d / time.Second)) }
	if have["idle_transaction_timeout"] {
		add("idle_transaction_timeout", secs(IdleInTransactionTimeout))
	} else {
		add("wait_timeout", secs(IdleSessionTimeout))
	}
	if have["max_statement_time"] {
		add("max_statement_time", strconv.FormatFloat(StatementTimeout.Seconds(), 'f', 3, 64))
	} else {
		add("max_execution_time", strconv.FormatInt(StatementTimeout.Milliseconds(), 10))
	}
	return set
}

// applySession asks the server which of sessionVars it has (one round trip) and sets
// the chosen limits for this session (one more); it returns the assignments it made.
func applySession(ctx context.Context, conn driver.Conn, fixed map[string]bool) ([]string, error) {
	q, ok1 := conn.(driver.QueryerContext)
	x, ok2 := conn.(driver.ExecerContext)
	if !ok1 || !ok2 {
		return nil, errors.New("driver connection cannot run statements")
	}
	quoted := make([]string, len(sessionVars))
	for i, v := range sessionVars {
		quoted[i] = "'" + v + "'"
	}
	rows, err := q.QueryContext(ctx, "SHOW SESSION VARIABLES WHERE Variable_name IN ("+strings.Join(quoted, ", ")+")", nil)
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	dest := make([]driver.Value, len(rows.Columns()))
	for {
		err := rows.Next(dest)
		if err == io.EOF {
			break
		}
		if err != nil {
			rows.Close()
			return nil, err
		}
		name := strings.ToLower(asString(dest[0]))
		if slices.Contains(sessionVars, name) {
			have[name] = true
		}
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	set := sessionSettings(have, fixed)
	if len(set) == 0 {
		return nil, nil
	}
	_, err = x.ExecContext(ctx, "SET SESSION "+strings.Join(set, ", "), nil)
	var me *mysql.MySQLError
	if errors.As(err, &me) && me.Number == erUnknownSystemVariable {
		// A server that lists a variable it then refuses (a proxy in front of another
		// flavour): set what it takes, one at a time.
		var took []string
		for _, s := range set {
			_, err := x.ExecContext(ctx, "SET SESSION "+s, nil)
			switch {
			case err == nil:
				took = append(took, s)
			case !(errors.As(err, &me) && me.Number == erUnknownSystemVariable):
				return nil, err
			}
		}
		return took, nil
	}
	if err != nil {
		return nil, err
	}
	return set, nil
}

func asString(v driver.Value) string {
	switch s := v.(type) {
	case []byte:
		return string(s)
	case string:
		return s
	}
	return fmt.Sprint(v)
}
