// Package mysqlstore implements engine.Store on MySQL 8.0+ and MariaDB 10.11+ with
// github.com/go-sql-driver/mysql. CI runs it on MariaDB 10.11 and Oracle MySQL 9.7; the
// README's compatibility table says what ran where, TiDB included.
//
// # Schema
//
// Versioned migrations are embedded (migrations/NNNN_name.sql) and applied by Migrate
// (`helix migrate`): idempotent, serialised across hosts by a GET_LOCK named after the
// database, refusing a schema newer than the binary. Open refuses a database that is not
// exactly at LatestVersion. Tables are prefixed helix_: leases, nodes, tasklists,
// assignments (one row per partition), revision (one row per cluster: the store-wide
// assignment revision) and schema_migrations.
//
// Every primary key starts with a cluster column, so one database can host several helix
// clusters side by side (Options.Cluster, default "default"); every statement names it.
//
// # Time
//
// All expiry and heartbeat ages are the server's clock: UTC_TIMESTAMP(6) inside the
// statement that decides, never a client timestamp. Times are read back as microseconds
// since the epoch with TIMESTAMPDIFF, which is independent of the session time zone.
// Replies carry Now = the server's UTC_TIMESTAMP(6), read by the call itself (in the
// statement that decides, where there is one), with one documented exception: the
// heartbeat fast path (below) does not read the server clock; its Now is the local
// clock corrected by the server-clock offset measured on the last reply that did read
// it (accurate to about half a round trip). Nothing in the store decides anything from
// that estimate.
//
// # Hot paths
//
//   - Heartbeat is one primary-key UPDATE in steady state: it matches only if the
//     incarnation is alive and the node's assignment revision equals the caller's known
//     one. One matched row (clientFoundRows) means alive and unchanged. Zero means dead or
//     changed: a second UPDATE without the revision condition tells which, and one SELECT
//     returns the node's rows and the partitions on their way to it (Incoming: rows with
//     target = the node, Releasing or Unassigned; index helix_assignments_by_target).
//     Apply and AckRelease bump those targets' assign_rev in the same multi-row UPDATE as
//     the owners', so a node learns what is coming to it without any steady-state cost.
//   - RenewLease is one UPDATE (server-time expiry check in its WHERE) plus one SELECT
//     for the reply. A standby's AcquireLease of a held lease is one plain SELECT.
//   - ReadState, ReadAssignments, ListNodes and ListTaskLists are each ONE SELECT (a
//     UNION ALL of the tables), so they are one consistent InnoDB read view without a
//     transaction; assignment rows are read incrementally by revision (indexed), so a
//     coordinator tick costs O(nodes + task lists + changed rows).
//
// # Fencing
//
// Apply runs in one transaction that reads the fencing lease row with SELECT … FOR
// UPDATE (a plain read would see a snapshot): a missing, inactive, expired (server time)
// or different epoch fails the whole batch with engine.ErrFenced and nothing is written.
// Rows record the epoch that wrote them; a lower epoch is refused (ErrFenced). Writers
// of assignment rows lock the cluster's revision row first, which serialises them and
// orders their locks, so they cannot deadlock with each other; Apply takes it before
// the lease row, so that a batch queued behind another writer never holds the lease row
// (and so never delays the coordinator's renewals). Changes are written with multi-row
// statements.
//
// # Errors and retries
//
// Deadlocks (1213), lock wait timeouts (1205), and connection errors before a commit was
// sent are retried with jittered exponential backoff within the caller's context. An
// error after COMMIT was sent is ambiguous: it is resolved by re-reading (Apply records
// a random batch id on the lease row it locked; AcquireLease, AckRelease, RegisterNode
// check the row they wrote), never by repeating blindly. Duplicate keys map to
// engine.ErrConflict, read-only servers (1290, 1792, 1836) and exhausted retries to
// engine.ErrUnavailable, a missing schema to ErrSchema, bad input to *engine.ValidationError
// before any SQL runs. Every value is a query parameter. Errors name the server as
// user@net(addr)/db; the password never appears.
//
// # DSN
//
// ParseDSN applies defaults the store depends on (clientFoundRows, rejectReadOnly,
// parseTime, UTC, interpolateParams so that a statement is one round trip, TCP
// keepalive) and sensible ones the caller may override (connect/read/write timeouts,
// innodb_lock_wait_timeout=1 for the session). TLS is configured in the DSN as usual
// (tls=true, tls=custom, …).
//
// # Stalled clients
//
// A client that stalls inside a transaction (frozen process, cut network, a connection
// whose FIN never reached the server) holds its row locks as long as the server keeps
// its session. Open's connections therefore carry session time limits, chosen by what
// the server has (asked on the first connection; later ones set the same in the driver's
// own SET, and a refusal makes it ask again — so a SET never names a variable Oracle
// MySQL lacks): MariaDB's idle_transaction_timeout (IdleInTransactionTimeout) or, where
// there is none, wait_timeout (IdleSessionTimeout, with the pool closing idle
// connections first); MariaDB's max_statement_time or MySQL's max_execution_time
// (StatementTimeout). A variable the DSN sets itself is left as the DSN says. The server
// rolls back what such a limit cuts short; the store classifies those errors (1927,
// 1969, 3024, 4031) as retryable. Migrations (OpenDB) run without these limits.
package mysqlstore
