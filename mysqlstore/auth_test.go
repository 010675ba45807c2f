package mysqlstore_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/mysqlstore"
)

// TestPasswordUserOverPlainTCP: a user with a password, created with the server's default
// authentication plugin, opens a store over plain TCP with nothing added to the DSN. On
// Oracle MySQL 8.4+/9.x that plugin is caching_sha2_password (mysql_native_password is
// gone): with an empty authentication cache, which FLUSH PRIVILEGES guarantees, the first
// login is a full authentication, which the driver completes without TLS by fetching the
// server's RSA public key. MariaDB and TiDB default to mysql_native_password.
func TestPasswordUserOverPlainTCP(t *testing.T) {
	dsn := migratedDSN(t)
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	admin, _, err := mysqlstore.OpenDB(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx := context.Background()
	// The database name is unique to this test: so is the user named after it.
	user := "hx_" + strings.TrimPrefix(cfg.DBName, "helix_test_")
	const pw = "Correct-Horse-9"
	if _, err := admin.ExecContext(ctx, fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", user, pw)); err != nil {
		t.Fatal(err)
	}
	defer admin.ExecContext(context.WithoutCancel(ctx), fmt.Sprintf("DROP USER IF EXISTS '%s'@'%%'", user))
	if _, err := admin.ExecContext(ctx, fmt.Sprintf("GRANT SELECT, INSERT, UPDATE, DELETE ON %s.* TO '%s'@'%%'", cfg.DBName, user)); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ExecContext(ctx, "FLUSH PRIVILEGES"); err != nil {
		t.Fatal(err)
	}
	var plugin string
	if err := admin.QueryRowContext(ctx, "SELECT plugin FROM mysql.user WHERE user = ?", user).Scan(&plugin); err != nil {
		t.Logf("authentication plugin not readable here: %v", err)
	}
	t.Logf("user %s authenticates with %q", user, plugin)

	cfg.User, cfg.Passwd = user, pw
	s, err := mysqlstore.Open(ctx, cfg.FormatDSN(), mysqlstore.Options{})
	if err != nil {
		t.Fatalf("Open as a password user over plain TCP: %v", err)
	}
	defer s.Close()
	if _, err := s.RegisterNode(ctx, engine.NodeSpec{ID: "n1", Capacity: 1}); err != nil {
		t.Fatalf("RegisterNode as the password user: %v", err)
	}

	cfg.Passwd = "Wrong-Horse-9"
	if _, err := mysqlstore.Open(ctx, cfg.FormatDSN(), mysqlstore.Options{}); err == nil {
		t.Fatal("Open with a wrong password succeeded")
	}
}
