package mysqlstore_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/helixcoord/helix/mysqlstore"
	"github.com/helixcoord/helix/mysqlstore/mysqltest"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDriverLogsGoThroughSlog: the server kills an idle pooled connection; the driver
// notices on reuse and says "closing bad idle connection" — as a structured WARN line,
// not an unstructured "[mysql] …" line on stderr.
func TestDriverLogsGoThroughSlog(t *testing.T) {
	dsn := mysqltest.DSN(t)
	var buf lockedBuffer
	mysqlstore.SetDriverLogger(slog.New(slog.NewJSONHandler(&buf, nil)))
	db, _, err := mysqlstore.OpenDB(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var id int64
	if err := db.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
		t.Fatal(err)
	}
	killer, _, err := mysqlstore.OpenDB(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer killer.Close()
	if _, err := killer.ExecContext(ctx, "KILL CONNECTION ?", id); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(buf.String(), "closing bad idle connection") {
		if time.Now().After(deadline) {
			t.Fatalf("no driver line in the structured log after reusing a killed connection; log:\n%s", buf.String())
		}
		var one int
		if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
			t.Fatalf("the pool did not replace the killed connection: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	line := buf.String()
	for _, want := range []string{`"level":"WARN"`, `"component":"mysql-driver"`} {
		if !strings.Contains(line, want) {
			t.Errorf("driver line %s lacks %s", line, want)
		}
	}
}
