package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/mysqlstore"
)

// storeFlags are the flags of every command that opens the MySQL store.
type storeFlags struct {
	dsnFile *string
	cluster string
}

func (s *storeFlags) register(fs *flag.FlagSet) {
	s.dsnFile = dsnFlag(fs)
	fs.StringVar(&s.cluster, "cluster", mysqlstore.DefaultCluster, "helix `cluster` inside the database (several may share one)")
}

// open connects to the store named by the DSN (see dsn.go), checking its schema.
func (s *storeFlags) open(ctx context.Context, e *env) (*mysqlstore.Store, error) {
	dsn, err := loadDSN(e, *s.dsnFile)
	if err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	st, err := mysqlstore.Open(octx, dsn, mysqlstore.Options{Cluster: s.cluster})
	if err != nil {
		return nil, fmt.Errorf("%w (run 'helix migrate' first if the schema is missing)", err)
	}
	return st, nil
}

var _ engine.Store = (*mysqlstore.Store)(nil)
