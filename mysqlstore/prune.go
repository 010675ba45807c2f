package mysqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/helixcoord/helix/engine"
)

// incarnationFloorKey names the row that remembers the highest incarnation of every
// node row PruneNodes deleted. It lives in helix_leases, whose rows are never deleted,
// under a key no lease can have (names may not contain control characters), so it
// needs no schema change and can never be mistaken for a lease.
const incarnationFloorKey = "\x00incarnation-floor"

// PruneNodes deletes the rows of nodes that are dead or deregistered and have not
// heartbeated for longer than retention (store time), so that `helix status` does not
// list every node that ever lived. It returns how many it deleted.
//
// What fencing needs is kept: a deleted node's heartbeats are refused like any dead
// incarnation's (there is no row to match), and the highest incarnation deleted is
// recorded, so that a node registering with a pruned id gets an incarnation above any
// ever issued in the cluster — a process of a pruned incarnation, paused for hours and
// woken, can never match a new one. Safe from any client at any time; idempotent.
func (s *Store) PruneNodes(ctx context.Context, retention time.Duration) (int, error) {
	if retention <= 0 {
		return 0, engine.Invalid("retention", retention.String(), "must be > 0")
	}
	deleted := 0
	err := s.inTx(ctx, "prune_nodes", func(tx *sql.Tx) error {
		deleted = 0
		// Lock the candidates: none can be re-registered (and so change incarnation)
		// between reading its incarnation and deleting it.
		rows, err := tx.QueryContext(ctx, "SELECT id, incarnation FROM helix_nodes WHERE cluster = ? AND status = 1 "+
			"AND last_heartbeat < UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND FOR UPDATE", s.cluster, retention.Microseconds())
		if err != nil {
			return err
		}
		var ids []any
		var floor uint64
		for rows.Next() {
			var id []byte
			var inc uint64
			if err := rows.Scan(&id, &inc); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
			floor = max(floor, inc)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO helix_leases (cluster, lock_key, owner_id, epoch, expires_at, status) "+
			"VALUES (?, ?, '', ?, UTC_TIMESTAMP(6), 0) ON DUPLICATE KEY UPDATE epoch = GREATEST(epoch, ?)",
			s.cluster, incarnationFloorKey, floor, floor); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, "DELETE FROM helix_nodes WHERE cluster = ? AND id IN (?"+strings.Repeat(", ?", len(ids)-1)+")",
			append([]any{s.cluster}, ids...)...)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		deleted = int(n)
		return err
	}, nil)
	if err != nil {
		return 0, err
	}
	return deleted, nil
}

// incarnationFloor is the highest incarnation PruneNodes ever deleted (0 if none),
// read with a locking read so that it is the latest committed value. FOR UPDATE, not a
// shared lock: TiDB has no LOCK IN SHARE MODE (error 1235), and registrations of new ids
// are rare enough that serialising them on this row costs nothing.
func (s *Store) incarnationFloor(ctx context.Context, tx *sql.Tx) (uint64, error) {
	var floor uint64
	err := tx.QueryRowContext(ctx, "SELECT epoch FROM helix_leases WHERE cluster = ? AND lock_key = ? FOR UPDATE",
		s.cluster, incarnationFloorKey).Scan(&floor)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading the incarnation floor: %w", err)
	}
	return floor, nil
}
