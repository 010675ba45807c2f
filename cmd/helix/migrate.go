package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/helixcoord/helix/mysqlstore"
)

func init() {
	register(&command{
		name:    "migrate",
		summary: "create or upgrade helix's tables in MySQL / MariaDB (idempotent, safe from several hosts)",
		run:     runMigrate,
	})
}

const migrateExamples = `  HELIX_DSN='helix:secret@tcp(127.0.0.1:3306)/helix' helix migrate
  helix migrate --dsn-file /run/secrets/helix-dsn
  helix migrate --check          # exit 1 unless the schema is current

Creates or upgrades helix's tables (helix_*) to the schema version this binary embeds.
It is idempotent and safe to run from several hosts at once: a server lock named after
the database lets one host migrate while the others wait and then find nothing to do.
It refuses a database migrated by a newer helix (upgrade the binary first).
The DSN must name the database, e.g. user:pass@tcp(db.internal:3306)/helix?tls=true
`

// dsnArgFlag registers --dsn on fs (migrate and fence-bump only; discouraged, see
// dsnFromFlags) and returns its value.
func dsnArgFlag(fs *flag.FlagSet) *string {
	return fs.String("dsn", "", "MySQL `DSN` (discouraged: visible in ps; prefer $HELIX_DSN or --dsn-file)")
}

// dsnFromFlags returns --dsn if given on the command line (with a warning: it shows in
// ps and shell history), else the shared HELIX_DSN / --dsn-file / HELIX_DSN_FILE
// resolution of dsn.go.
func dsnFromFlags(e *env, flagDSN, dsnFile string) (string, error) {
	if flagDSN != "" && flagDSN != e.getenv("HELIX_DSN") {
		fmt.Fprintln(e.stderr, "helix: warning: --dsn puts the password in the process list and shell history; prefer HELIX_DSN or --dsn-file")
		return flagDSN, nil
	}
	return loadDSN(e, dsnFile)
}

func runMigrate(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet(e, "migrate", "helix migrate [--dsn-file FILE] [--check] [--timeout D]", migrateExamples)
	dsnFile := dsnFlag(fs)
	dsnArg := dsnArgFlag(fs)
	var tf tlsFlags
	tf.register(fs)
	check := fs.Bool("check", false, "only report the schema version; exit 1 unless it is current")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long (includes waiting for another host's migration)")
	pos, code, ok := parseFlags(e, fs, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return badUsage(e, fs, "unexpected argument %q", pos[0])
	}
	if *timeout <= 0 {
		return badUsage(e, fs, "invalid --timeout %v: must be > 0", *timeout)
	}
	dsn, err := dsnFromFlags(e, *dsnArg, *dsnFile)
	if err == nil {
		dsn, err = tf.apply(dsn)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "helix migrate: %v\n", err)
		return 1
	}
	db, name, err := mysqlstore.OpenDB(dsn)
	if err != nil {
		fmt.Fprintf(e.stderr, "helix migrate: %v\n", err)
		return 1
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if *check {
		v, err := mysqlstore.SchemaVersion(ctx, db)
		if err != nil {
			fmt.Fprintf(e.stderr, "helix migrate: %s: %v\n", name, err)
			return 1
		}
		latest := mysqlstore.LatestVersion()
		fmt.Fprintf(e.stdout, "schema version %d; this binary's is %d\n", v, latest)
		if v != latest {
			return 1
		}
		return 0
	}
	res, err := mysqlstore.Migrate(ctx, db)
	if err != nil {
		fmt.Fprintf(e.stderr, "helix migrate: %s: %v\n", name, err)
		return 1
	}
	if len(res.Applied) == 0 {
		fmt.Fprintf(e.stdout, "schema already at version %d; nothing to do\n", res.To)
	} else {
		fmt.Fprintf(e.stdout, "schema migrated from version %d to %d (applied %v)\n", res.From, res.To, res.Applied)
	}
	return 0
}
