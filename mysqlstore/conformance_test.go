package mysqlstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/engine/storetest"
	"github.com/helixcoord/helix/mysqlstore"
	"github.com/helixcoord/helix/mysqlstore/mysqltest"
)

// migratedDSN returns a DSN for a fresh, migrated database owned by t.
func migratedDSN(t testing.TB) string {
	t.Helper()
	dsn := mysqltest.DSN(t)
	db, _, err := mysqlstore.OpenDB(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := mysqlstore.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	return dsn
}

// openStore opens a Store on dsn for cluster, closed when t ends.
func openStore(t testing.TB, dsn, cluster string) *mysqlstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := mysqlstore.Open(ctx, dsn, mysqlstore.Options{Cluster: cluster})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConformance runs engine/storetest against the real server. Every store the suite
// asks for is a fresh cluster inside one migrated database: the cluster column keys
// every table, so a new cluster is an empty store, at the cost of no DDL.
func TestConformance(t *testing.T) {
	dsn := migratedDSN(t)
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) (engine.Store, storetest.Clock) {
		return openStore(t, dsn, fmt.Sprintf("conf-%d", n.Add(1))), storetest.RealClock{}
	})
}
