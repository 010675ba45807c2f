package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/mysqlstore"
	"github.com/helixcoord/helix/mysqlstore/mysqltest"
)

// Tests of issue 10 §2 in the binary: flag validation, environment scoping, log
// format, store-open errors and retries, the status page on a production node.

// TestNodeRejectsValuesItWouldReplace: a zero or negative value given for a setting
// that the engine would silently replace by its default is refused, naming the flag
// and the rule, before anything is opened.
func TestNodeRejectsValuesItWouldReplace(t *testing.T) {
	for _, c := range []struct {
		args []string
		vars map[string]string
		want string
	}{
		{[]string{"--capacity", "0"}, nil, "invalid --capacity 0: must be ≥ 1"},
		{[]string{"--capacity", "-2"}, nil, "invalid --capacity -2: must be ≥ 1"},
		{[]string{"--heartbeat", "0"}, nil, "invalid --heartbeat 0s: must be > 0"},
		{nil, map[string]string{"HELIX_HEARTBEAT": "0s"}, "invalid --heartbeat 0s: must be > 0"},
		{[]string{"--stop-timeout", "-1s"}, nil, "invalid --stop-timeout -1s: must be > 0"},
		{[]string{"--stop-timeout", "0"}, nil, "invalid --stop-timeout 0s: must be > 0"},
		{[]string{"--lease-ttl", "0s"}, nil, "invalid --lease-ttl 0s: must be > 0"},
		{[]string{"--safety-margin", "0"}, nil, "invalid --safety-margin 0s: must be > 0"},
		{[]string{"--max-in-flight", "-1"}, nil, "invalid --max-in-flight -1: must be ≥ 0"},
		{[]string{"--start-timeout", "-1s"}, nil, "invalid --start-timeout -1s: must be ≥ 0"},
	} {
		vars := map[string]string{"HELIX_DSN": "u:p@tcp(127.0.0.1:1)/never"}
		for k, v := range c.vars {
			vars[k] = v
		}
		code, _, errOut := quick(t, vars, append([]string{"node", "--id", "a"}, c.args...)...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("helix node %v %v: exit %d, stderr %q; want 2 and %q", c.args, c.vars, code, errOut, c.want)
		}
	}
	// The same flags left unset still take the defaults.
	var nf nodeFlags
	fs := newFlagSet(&env{stderr: io.Discard, stdout: io.Discard}, "node", "", "")
	nf.register(fs, true)
	if _, _, ok := parseFlags(&env{stderr: io.Discard, getenv: func(string) string { return "" }}, fs, []string{"--id", "a"}); !ok {
		t.Fatal("parse")
	}
	if cfg, err := nf.config(); err != nil || cfg.Heartbeat != engine.DefaultConfig().Heartbeat || cfg.Capacity != 1 {
		t.Fatalf("defaults: %+v %v", cfg, err)
	}
}

// TestFlagEnvironmentIsScoped: a command's own flags read HELIX_<COMMAND>_<FLAG> only,
// so HELIX_UNDRAIN cannot turn `helix drain` into an undrain nor HELIX_CHECK turn
// `helix migrate` into a check; shared settings keep HELIX_<FLAG>.
func TestFlagEnvironmentIsScoped(t *testing.T) {
	for cmd, want := range map[string][]string{
		"drain":   {"[$HELIX_DRAIN_UNDRAIN]", "[$HELIX_DRAIN_TIMEOUT]", "[$HELIX_DSN_FILE]", "[$HELIX_CLUSTER]", "[$HELIX_TLS_CA]", "HELIX_DRAIN_<FLAG>"},
		"migrate": {"[$HELIX_MIGRATE_CHECK]", "[$HELIX_MIGRATE_TIMEOUT]", "[$HELIX_DSN_FILE]", "[$HELIX_TLS_CERT]"},
		"node":    {"[$HELIX_ID]", "[$HELIX_HEARTBEAT]", "[$HELIX_HTTP]", "[$HELIX_NODE_START_TIMEOUT]", "[$HELIX_NODE_WORK_INTERVAL]"},
		"status":  {"[$HELIX_STATUS_JSON]"},
	} {
		_, out, _ := quick(t, nil, cmd, "--help")
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("helix %s --help lacks %s", cmd, w)
			}
		}
	}

	dsn := mysqltest.DSN(t)
	vars := func(kv ...string) map[string]string {
		m := map[string]string{"HELIX_DSN": dsn}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	if code, out, _ := quick(t, vars("HELIX_MIGRATE_CHECK", "1"), "migrate"); code != 1 || !strings.Contains(out, "schema version 0") {
		t.Fatalf("HELIX_MIGRATE_CHECK=1 helix migrate: exit %d %q; want a check (exit 1, version 0)", code, out)
	}
	if code, out, errOut := quick(t, vars("HELIX_CHECK", "1"), "migrate"); code != 0 || !strings.Contains(out, "migrated from version 0") {
		t.Fatalf("HELIX_CHECK=1 helix migrate: exit %d %q %q; want a migration", code, out, errOut)
	}
	st, err := mysqlstore.Open(context.Background(), dsn, mysqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.RegisterNode(context.Background(), engine.NodeSpec{ID: "w1", Capacity: 1}); err != nil {
		t.Fatal(err)
	}
	draining := func() bool {
		r, err := st.ListNodes(context.Background())
		if err != nil || len(r.Nodes) != 1 {
			t.Fatalf("list nodes: %v %v", r, err)
		}
		return r.Nodes[0].Draining
	}
	if code, out, _ := quick(t, vars("HELIX_UNDRAIN", "true"), "drain", "w1"); code != 0 || !strings.Contains(out, "w1 draining") || !draining() {
		t.Fatalf("HELIX_UNDRAIN=true helix drain w1: exit %d %q; want a drain", code, out)
	}
	if code, out, _ := quick(t, vars("HELIX_DRAIN_UNDRAIN", "true"), "drain", "w1"); code != 0 || !strings.Contains(out, "w1 undrained") || draining() {
		t.Fatalf("HELIX_DRAIN_UNDRAIN=true helix drain w1: exit %d %q; want an undrain", code, out)
	}
}

// TestLogsShowDurationsAsStrings: "lease_ttl":"6s", not 6000000000.
func TestLogsShowDurationsAsStrings(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var b bytes.Buffer
		lf := logFlags{format: format, level: "info"}
		log, err := lf.logger(&b)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("node starting", "lease_ttl", 6*time.Second, slog.Group("g", "took", 1500*time.Microsecond))
		out := b.String()
		if !strings.Contains(out, "6s") || !strings.Contains(out, "1.5ms") || strings.Contains(out, "6000000000") {
			t.Errorf("%s log line: %s; want durations as strings", format, out)
		}
	}
}

// TestStoreOpenErrorsSayMigrateOnlyWhenTheSchemaIsMissing.
func TestStoreOpenErrorsSayMigrateOnlyWhenTheSchemaIsMissing(t *testing.T) {
	dsn := mysqltest.DSN(t)
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	refused := cfg.Clone()
	refused.Addr = closedPort(t)
	denied := cfg.Clone()
	denied.User, denied.Passwd = "helix_nobody", "wrong"
	for _, c := range []struct {
		name, dsn string
		want      string
		hint      bool
	}{
		{"schema missing", dsn, "run `helix migrate`", true},
		{"connection refused", refused.FormatDSN(), "connection refused", false},
		{"access denied", denied.FormatDSN(), "Error 1045", false},
	} {
		code, _, errOut := quick(t, map[string]string{"HELIX_DSN": c.dsn}, "status")
		if code != 1 || !strings.Contains(errOut, c.want) || strings.Contains(errOut, "migrate") != c.hint {
			t.Errorf("%s: exit %d, stderr %q; want 1, %q, and the migrate hint %v", c.name, code, errOut, c.want, c.hint)
		}
	}
}

func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestNodeRetriesTheStoreUntilStartTimeout: with the database unreachable, helix node
// retries with backoff, logging each attempt, and exits 1 at --start-timeout.
func TestNodeRetriesTheStoreUntilStartTimeout(t *testing.T) {
	vars := map[string]string{"HELIX_DSN": "u:p@tcp(" + closedPort(t) + ")/helix?timeout=1s"}
	start := time.Now()
	code, _, errOut := quick(t, vars, "node", "--id", "a", "--start-timeout", "2s", "--http", "")
	took := time.Since(start)
	attempts := regexp.MustCompile(`"msg":"store not available; retrying","node":"a","attempt":(\d+)`).FindAllStringSubmatch(errOut, -1)
	if code != 1 || len(attempts) < 3 || !strings.Contains(errOut, "gave up after") || !strings.Contains(errOut, "connection refused") {
		t.Fatalf("exit %d after %v; want 1 after ≥ 3 logged attempts and a final 'gave up'; stderr:\n%s", code, took, errOut)
	}
	if took < 2*time.Second || took > 10*time.Second {
		t.Errorf("gave up after %v, want about the 2s start timeout", took)
	}
	for i, a := range attempts {
		if a[1] != fmt.Sprint(i+1) {
			t.Errorf("attempt lines out of order: %v", attempts)
		}
	}
	// --start-timeout 0: one attempt.
	if code, _, errOut := quick(t, vars, "node", "--id", "a", "--start-timeout", "0", "--http", ""); code != 1 || strings.Contains(errOut, "retrying") {
		t.Errorf("--start-timeout 0: exit %d, stderr %q; want 1 without retries", code, errOut)
	}
}

// TestNodeWaitsForMigrateThenServesItsStatusPage: a node started before the schema
// exists waits for it (a deploy that runs helix migrate alongside), then runs and serves
// the HTML status page on --http.
func TestNodeWaitsForMigrateThenServesItsStatusPage(t *testing.T) {
	dsn := mysqltest.DSN(t)
	vars := map[string]string{"HELIX_DSN": dsn}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, errb := &syncBuffer{}, &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		e := &env{stdin: strings.NewReader(""), stdout: out, stderr: errb, getenv: func(k string) string { return vars[k] }}
		done <- run(ctx, e, []string{"node", "--id", "w1", "--profile", "fast", "--http", "127.0.0.1:0", "--start-timeout", "30s"})
	}()
	pollUntil(t, "a retry because the schema is missing", 10*time.Second, func() bool {
		return strings.Contains(errb.String(), "store not available; retrying") && strings.Contains(errb.String(), "helix migrate")
	})
	if code, _, errOut := quick(t, vars, "migrate"); code != 0 {
		t.Fatalf("migrate: %d %s", code, errOut)
	}
	var addr string
	pollUntil(t, "the node listening", 20*time.Second, func() bool {
		if m := urlRE.FindStringSubmatch(errb.String()); m != nil {
			addr = m[1]
		}
		return addr != ""
	})
	if !strings.Contains(errb.String(), `"msg":"store open"`) {
		t.Errorf("no line saying the store opened after retries:\n%s", errb.String())
	}
	pollUntil(t, "the status page shows the node", 10*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && strings.Contains(resp.Header.Get("Content-Type"), "text/html") &&
			strings.Contains(string(b), "<h2>This process</h2>") && strings.Contains(string(b), "<td>w1</td>")
	})
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("node exited %d; stderr:\n%s", code, errb.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("node did not stop")
	}
}

// TestREADMEGrantsSuffice: the README's two users — one that migrates, one for the
// nodes and admin commands — can do what it says with exactly those privileges, and
// the second cannot change the schema.
func TestREADMEGrantsSuffice(t *testing.T) {
	dsn := mysqltest.DSN(t)
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	root, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	suffix := strings.TrimPrefix(cfg.DBName, "helix_test_")
	users := map[string]string{
		"hm_" + suffix: "SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX", // README: helix_migrate
		"hn_" + suffix: "SELECT, INSERT, UPDATE, DELETE",                       // README: helix
	}
	userDSN := map[string]string{}
	for u, grants := range users {
		for _, q := range []string{
			"CREATE USER '" + u + "'@'%' IDENTIFIED BY 'pw'",
			"GRANT " + grants + " ON `" + cfg.DBName + "`.* TO '" + u + "'@'%'",
		} {
			if _, err := root.Exec(q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		t.Cleanup(func() { root.Exec("DROP USER IF EXISTS '" + u + "'@'%'") })
		c := cfg.Clone()
		c.User, c.Passwd = u, "pw"
		userDSN[u] = c.FormatDSN()
	}
	migrator, node := map[string]string{"HELIX_DSN": userDSN["hm_"+suffix]}, map[string]string{"HELIX_DSN": userDSN["hn_"+suffix]}
	if code, _, errOut := quick(t, node, "migrate"); code != 1 || !strings.Contains(errOut, "denied") {
		t.Fatalf("migrate as the node user: exit %d %q; want it denied", code, errOut)
	}
	if code, out, errOut := quick(t, migrator, "migrate"); code != 0 {
		t.Fatalf("migrate as the migrate user: exit %d %q %q", code, out, errOut)
	}
	for _, args := range [][]string{
		{"tasklist", "put", "jobs", "4"},
		{"tasklist", "list"},
		{"status"},
		{"tasklist", "delete", "jobs"},
	} {
		if code, out, errOut := quick(t, node, args...); code != 0 {
			t.Errorf("helix %v as the node user: exit %d %q %q", args, code, out, errOut)
		}
	}
}
