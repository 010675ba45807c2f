package e2e

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/mysqlstore/mysqltest"
)

// nodeGrants are the privileges a `helix node` needs (README, production section).
const nodeGrants = "SELECT, INSERT, UPDATE, DELETE"

// TestHealthTellsTheTruth runs two real `helix node` processes on MariaDB, one of them
// as a database user with only the grants the README lists, and checks what the node
// itself says through /readyz, /healthz, /metrics and /status:
//   - an operator's `helix drain w1` shows on w1 (503 "draining", helix_draining 1,
//     draining in /status) and `--undrain` clears it;
//   - with w1's password changed (and its connections killed) /readyz turns 503 saying
//     self-fenced with the cause (Error 1045), the log has a WARN line with the cause,
//     /healthz stays 200; with the password back it is ready again.
func TestHealthTellsTheTruth(t *testing.T) {
	dsn := mysqltest.DSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := migratedCluster(t, ctx, dsn, t.TempDir(), Fast, map[string]int{"jobs": 8})
	defer func() {
		if err := c.Shutdown(15 * time.Second); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if t.Failed() {
			for _, pr := range c.Procs() {
				t.Logf("log of %s: %s", pr.ID, pr.LogPath)
			}
		}
	}()

	admin, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	cfg, _ := mysql.ParseDSN(dsn)
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	user := "helix_e2e_" + hex.EncodeToString(rnd[:])
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := admin.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec("CREATE USER '" + user + "'@'%' IDENTIFIED BY 'pw-one'")
	defer admin.Exec("DROP USER IF EXISTS '" + user + "'@'%'")
	exec("GRANT " + nodeGrants + " ON `" + cfg.DBName + "`.* TO '" + user + "'@'%'")
	ucfg := cfg.Clone()
	ucfg.User, ucfg.Passwd = user, "pw-one"

	w1, err := c.Start("w1", ucfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start("w2", ""); err != nil {
		t.Fatal(err)
	}
	mustPoll(t, ctx, c, "balance over w1 and w2", 30*time.Second, func(cs helix.ClusterStatus) (bool, string) {
		return Balanced(cs, []string{"w1", "w2"})
	})
	addr := w1.HTTPAddr()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitHTTP := func(what, path string, d time.Duration, cond func(code int, body string) bool) string {
		t.Helper()
		deadline := time.Now().Add(d)
		for {
			code, body := get(path)
			if cond(code, body) {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %v waiting for %s: GET %s = %d %s", d, what, path, code, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitHTTP("w1 ready", "/readyz", 10*time.Second, func(code int, _ string) bool { return code == 200 })

	// An operator drains w1 from another host.
	if _, err := c.Helix(ctx, "drain", "w1"); err != nil {
		t.Fatal(err)
	}
	body := waitHTTP("w1's /readyz to say draining", "/readyz", 10*time.Second, func(code int, body string) bool {
		return code == 503 && strings.Contains(body, "draining")
	})
	t.Logf("after helix drain w1: /readyz 503 %q", strings.TrimSpace(body))
	waitHTTP("helix_draining 1", "/metrics", 5*time.Second, func(code int, body string) bool {
		return strings.Contains(body, `helix_draining{node="w1"} 1`)
	})
	waitHTTP("draining in /status", "/status", 5*time.Second, func(code int, body string) bool {
		return strings.Contains(body, `"draining": true`)
	})
	if _, err := c.Helix(ctx, "drain", "--undrain", "w1"); err != nil {
		t.Fatal(err)
	}
	waitHTTP("w1 ready after undrain", "/readyz", 10*time.Second, func(code int, _ string) bool { return code == 200 })
	waitHTTP("helix_draining 0", "/metrics", 5*time.Second, func(code int, body string) bool {
		return strings.Contains(body, `helix_draining{node="w1"} 0`)
	})

	// The node's password is changed and its open connections are killed.
	revokedAt := time.Now()
	exec("ALTER USER '" + user + "'@'%' IDENTIFIED BY 'pw-two'")
	rows, err := admin.QueryContext(ctx, "SELECT id FROM information_schema.processlist WHERE user = ?", user)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		_ = rows.Scan(&id)
		ids = append(ids, id)
	}
	rows.Close()
	for _, id := range ids {
		// Not a placeholder: Oracle MySQL refuses KILL as a prepared statement (error 6413).
		_, _ = admin.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", id)) // it may be gone already
	}
	bound := Fast.DeadAfter + 2*time.Second
	body = waitHTTP("w1's /readyz to say self-fenced with the cause", "/readyz", bound, func(code int, body string) bool {
		return code == 503 && strings.Contains(body, "self-fenced") && strings.Contains(body, "Error 1045")
	})
	t.Logf("%v after the password change: /readyz 503 %q", time.Since(revokedAt).Round(time.Millisecond), strings.TrimSpace(body))
	if code, body := get("/healthz"); code != 200 {
		t.Errorf("/healthz of a self-fenced node: %d %s; want 200 (a restart would not help)", code, body)
	}
	lines, _ := readLines(w1.LogPath)
	warned, fenceWarned := false, false
	for _, l := range lines {
		if l["level"] == "WARN" && l["msg"] == "store call failed" && strings.Contains(fmt.Sprint(l["err"]), "Error 1045") {
			warned = true
		}
		if l["level"] == "WARN" && l["msg"] == "event" && l["kind"] == "self_fenced" {
			fenceWarned = true
		}
		if l["msg"] == "node starting" && l["lease_ttl"] != "2s" {
			t.Errorf("durations are not logged as strings: %v", l)
		}
	}
	if !warned || !fenceWarned {
		t.Errorf("w1's log %s lacks a WARN line with Error 1045 (%v) or a WARN self_fenced event (%v)", w1.LogPath, warned, fenceWarned)
	}

	exec("ALTER USER '" + user + "'@'%' IDENTIFIED BY 'pw-one'")
	waitHTTP("w1 ready again with its password back", "/readyz", 20*time.Second, func(code int, _ string) bool { return code == 200 })
}

// TestDeadNodesArePruned: with --node-retention 1s, a node that exited gracefully is
// gone from `helix status` soon after, and when it starts again it gets an
// incarnation above its old one (fencing kept what it needs).
func TestDeadNodesArePruned(t *testing.T) {
	dsn := mysqltest.DSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := migratedCluster(t, ctx, dsn, t.TempDir(), Fast, nil)
	defer func() {
		if err := c.Shutdown(15 * time.Second); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}()
	if _, err := c.Start("keeper", "", "--node-retention", "1s"); err != nil {
		t.Fatal(err)
	}
	mustPoll(t, ctx, c, "keeper coordinating", 20*time.Second, func(cs helix.ClusterStatus) (bool, string) {
		return cs.Coordinator.Held && cs.Coordinator.Owner != "", "no coordinator"
	})
	var inc uint64
	for range 2 { // two runs, so that the pruned incarnation is 2
		p, err := c.Start("brief", "", "--no-candidate")
		if err != nil {
			t.Fatal(err)
		}
		mustPoll(t, ctx, c, "brief registered", 20*time.Second, func(cs helix.ClusterStatus) (bool, string) {
			for _, n := range cs.Nodes {
				if n.ID == "brief" && n.State == "alive" && n.Incarnation > inc {
					inc = n.Incarnation
					return true, ""
				}
			}
			return false, "brief not alive"
		})
		_ = p.Term()
		if err := p.Wait(15 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	out, err := c.Helix(ctx, "status")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("right after brief exited:\n%s", out)
	took := mustPoll(t, ctx, c, "brief pruned", 10*time.Second, func(cs helix.ClusterStatus) (bool, string) {
		for _, n := range cs.Nodes {
			if n.ID == "brief" {
				return false, "brief still listed as " + n.State
			}
		}
		return true, ""
	})
	t.Logf("brief (incarnation %d) pruned %v after exiting", inc, took.Round(time.Millisecond))
	if out, err := c.Helix(ctx, "status"); err != nil || strings.Contains(out, "brief") {
		t.Fatalf("helix status still lists brief: %v\n%s", err, out)
	}
	if _, err := c.Start("brief", "", "--no-candidate"); err != nil {
		t.Fatal(err)
	}
	mustPoll(t, ctx, c, "brief back with a higher incarnation", 20*time.Second, func(cs helix.ClusterStatus) (bool, string) {
		for _, n := range cs.Nodes {
			if n.ID == "brief" {
				return n.Incarnation > inc, fmt.Sprintf("brief at incarnation %d, pruned one was %d", n.Incarnation, inc)
			}
		}
		return false, "brief not registered"
	})
}
