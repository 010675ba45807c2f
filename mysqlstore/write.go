package mysqlstore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/helixcoord/helix/engine"
)

// chunk bounds the rows of one multi-row statement (packet size, parse time).
const chunk = 500

// lockRevision locks the cluster's revision row (creating it on first use) and returns
// the revision and the server's clock. Every writer of assignment rows calls it first.
func (s *Store) lockRevision(ctx context.Context, tx *sql.Tx) (uint64, time.Time, error) {
	var rev uint64
	var nowV int64
	start := time.Now()
	err := tx.QueryRowContext(ctx, "SELECT revision, "+nowUS+" FROM helix_revision WHERE cluster = ? FOR UPDATE", s.cluster).Scan(&rev, &nowV)
	if errors.Is(err, sql.ErrNoRows) {
		_, err = tx.ExecContext(ctx, "INSERT INTO helix_revision (cluster, revision) VALUES (?, 0)", s.cluster)
		if isDup(err) {
			return 0, time.Time{}, &retryNow{err}
		}
		if err != nil {
			return 0, time.Time{}, err
		}
		now, err := s.nowOn(ctx, tx)
		return 0, now, err
	}
	if err != nil {
		return 0, time.Time{}, err
	}
	return rev, s.observe(nowV, start), nil
}

func setRevision(ctx context.Context, tx *sql.Tx, cluster string, rev uint64) error {
	_, err := tx.ExecContext(ctx, "UPDATE helix_revision SET revision = ? WHERE cluster = ?", rev, cluster)
	return err
}

// PutTaskList implements engine.Store. New rows get revisions in partition order. It
// converges to a desired state, so running it again after an ambiguous commit is safe.
func (s *Store) PutTaskList(ctx context.Context, tl engine.TaskList) (engine.Reply, error) {
	if err := engine.ValidateTaskList(tl); err != nil {
		return engine.Reply{}, err
	}
	var now time.Time
	err := s.inTx(ctx, "put_tasklist", func(tx *sql.Tx) error {
		rev, n, err := s.lockRevision(ctx, tx)
		if err != nil {
			return err
		}
		now = n
		var cur int
		err = tx.QueryRowContext(ctx, "SELECT partitions FROM helix_tasklists WHERE cluster = ? AND domain = ? AND name = ? FOR UPDATE", s.cluster, tl.Domain, tl.Name).Scan(&cur)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err = tx.ExecContext(ctx, "INSERT INTO helix_tasklists (cluster, domain, name, partitions) VALUES (?, ?, ?, ?)", s.cluster, tl.Domain, tl.Name, tl.Partitions)
		case err == nil && cur != tl.Partitions:
			_, err = tx.ExecContext(ctx, "UPDATE helix_tasklists SET partitions = ? WHERE cluster = ? AND domain = ? AND name = ?", tl.Partitions, s.cluster, tl.Domain, tl.Name)
		}
		if err != nil {
			return err
		}
		// Existing rows of the configured range, to find the missing and the tombstones.
		state := make([]int8, tl.Partitions) // -1 missing
		for i := range state {
			state[i] = -1
		}
		rows, err := tx.QueryContext(ctx, "SELECT part_no, state FROM helix_assignments WHERE cluster = ? AND domain = ? AND tasklist = ? AND part_no < ? FOR UPDATE",
			s.cluster, tl.Domain, tl.Name, tl.Partitions)
		if err != nil {
			return err
		}
		for rows.Next() {
			var p int
			var st int8
			if err := rows.Scan(&p, &st); err != nil {
				rows.Close()
				return err
			}
			if p >= 0 && p < len(state) {
				state[p] = st
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		var insert []any
		var revive []int
		var reviveRev []uint64
		flush := func() error {
			if len(insert) == 0 {
				return nil
			}
			q := "INSERT INTO helix_assignments (cluster, domain, tasklist, part_no, revision) VALUES " +
				strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?), ", len(insert)/5), ", ")
			_, err := tx.ExecContext(ctx, q, insert...)
			insert = insert[:0]
			return err
		}
		for p, st := range state {
			switch {
			case st < 0:
				rev++
				insert = append(insert, s.cluster, tl.Domain, tl.Name, p, rev)
				if len(insert)/5 == chunk {
					if err := flush(); err != nil {
						return err
					}
				}
			case engine.PartitionState(st) == engine.Deleted:
				rev++
				revive, reviveRev = append(revive, p), append(reviveRev, rev)
			}
		}
		if err := flush(); err != nil {
			return err
		}
		// Revive tombstones: Unassigned, generation and epoch kept (generations never
		// repeat), target cleared. Rare, so one statement each.
		for i, p := range revive {
			if _, err := tx.ExecContext(ctx, "UPDATE helix_assignments SET state = 0, target = '', revision = ? WHERE cluster = ? AND domain = ? AND tasklist = ? AND part_no = ?",
				reviveRev[i], s.cluster, tl.Domain, tl.Name, p); err != nil {
				return err
			}
		}
		return setRevision(ctx, tx, s.cluster, rev)
	}, func(context.Context) (bool, error) { return false, nil }) // idempotent: converge again
	if err != nil {
		return engine.Reply{}, err
	}
	return engine.Reply{Now: now}, nil
}

// DeleteTaskList implements engine.Store. It locks the revision row so that it is
// ordered with Apply (which checks partitions are configured).
func (s *Store) DeleteTaskList(ctx context.Context, domain, name string) (engine.Reply, error) {
	if err := engine.ValidateTaskListName(domain, name); err != nil {
		return engine.Reply{}, err
	}
	var now time.Time
	var found bool
	err := s.inTx(ctx, "delete_tasklist", func(tx *sql.Tx) error {
		_, n, err := s.lockRevision(ctx, tx)
		if err != nil {
			return err
		}
		now = n
		res, err := tx.ExecContext(ctx, "DELETE FROM helix_tasklists WHERE cluster = ? AND domain = ? AND name = ?", s.cluster, domain, name)
		if err != nil {
			return err
		}
		k, err := res.RowsAffected()
		found = k > 0
		return err
	}, nil)
	if err != nil {
		return engine.Reply{}, err
	}
	if !found {
		return engine.Reply{}, s.wrap("delete_tasklist", fmt.Errorf("task list %s/%s: %w", domain, name, engine.ErrNotFound))
	}
	return engine.Reply{Now: now}, nil
}

type nodeRow struct {
	incarnation uint64
	status      engine.NodeStatus
	age         time.Duration
}

// Apply implements engine.Store. One transaction: the revision row, the fence row's
// locking read, the changed rows and the involved nodes (FOR UPDATE), checks in the
// reference store's order (fence, row epochs → ErrFenced; dead nodes, revisions and
// preconditions → ErrConflict), then multi-row writes and a batch marker on the lease
// row. Nothing is written on any error.
func (s *Store) Apply(ctx context.Context, b engine.Batch) (engine.ApplyReply, error) {
	if err := engine.ValidateBatch(b); err != nil {
		return engine.ApplyReply{}, err
	}
	batchID := newBatchID()
	var reply engine.ApplyReply
	err := s.inTx(ctx, "apply", func(tx *sql.Tx) error {
		var err error
		reply, err = s.applyTx(ctx, tx, b, batchID)
		return err
	}, func(ctx context.Context) (bool, error) {
		var last []byte
		var epoch uint64
		err := s.db.QueryRowContext(ctx, "SELECT last_batch, epoch FROM helix_leases WHERE cluster = ? AND lock_key = ?", s.cluster, b.Fence.Key).Scan(&last, &epoch)
		if err != nil {
			return false, err
		}
		if bytes.Equal(last, batchID) {
			return true, nil
		}
		if epoch != b.Fence.Epoch {
			// Another tenure may have overwritten our marker: we cannot tell.
			return false, fmt.Errorf("lease %q moved to epoch %d: batch outcome unknown: %w", b.Fence.Key, epoch, engine.ErrUnavailable)
		}
		// Same tenure, marker not ours: only our own (single-threaded) coordinator writes
		// at this epoch, so the batch did not commit.
		return false, nil
	})
	if err != nil {
		return engine.ApplyReply{}, err
	}
	return reply, nil
}

func (s *Store) applyTx(ctx context.Context, tx *sql.Tx, b engine.Batch, batchID []byte) (engine.ApplyReply, error) {
	// 1. The revision row: serialises writers of assignment rows. It comes before the
	// lease row so that a batch waiting for it (behind a worker's AckRelease, or behind a
	// client that stalled while holding it) does not hold the lease row meanwhile: the
	// coordinator's renewals, which need only the lease row, go on.
	rev, _, err := s.lockRevision(ctx, tx)
	if err != nil {
		return engine.ApplyReply{}, err
	}
	// 2. The fence: a locking read of the lease row, expiry by server time.
	var epoch uint64
	var status uint8
	var live int
	var nowV int64
	start := time.Now()
	err = tx.QueryRowContext(ctx, "SELECT epoch, status, expires_at > UTC_TIMESTAMP(6), "+nowUS+
		" FROM helix_leases WHERE cluster = ? AND lock_key = ? FOR UPDATE", s.cluster, b.Fence.Key).Scan(&epoch, &status, &live, &nowV)
	if errors.Is(err, sql.ErrNoRows) {
		return engine.ApplyReply{}, fmt.Errorf("apply fenced by %s@%d: no such lease: %w", b.Fence.Key, b.Fence.Epoch, engine.ErrFenced)
	}
	if err != nil {
		return engine.ApplyReply{}, err
	}
	now := s.observe(nowV, start)
	if status != uint8(engine.LeaseActive) || epoch != b.Fence.Epoch || live == 0 {
		return engine.ApplyReply{}, fmt.Errorf("apply fenced by %s@%d: lease is at epoch %d, status %d, unexpired %v: %w",
			b.Fence.Key, b.Fence.Epoch, epoch, status, live != 0, engine.ErrFenced)
	}
	// 3. The changed rows, locked, grouped by task list (an equality prefix and an IN
	// list on the primary key: a range access on both MySQL and MariaDB).
	cur, err := s.lockRows(ctx, tx, b.Changes)
	if err != nil {
		return engine.ApplyReply{}, err
	}
	for _, c := range b.Changes {
		if r, ok := cur[c.Partition]; ok && r.Epoch > b.Fence.Epoch {
			return engine.ApplyReply{}, fmt.Errorf("apply at epoch %d: %s was written at epoch %d: %w", b.Fence.Epoch, c.Partition, r.Epoch, engine.ErrFenced)
		}
	}
	// 4. The involved nodes, locked: declared dead, old owners, new owners.
	ids := map[string]bool{}
	for _, d := range b.Dead {
		ids[d.ID] = true
	}
	for _, c := range b.Changes {
		if r, ok := cur[c.Partition]; ok && r.Owner != "" {
			ids[r.Owner] = true
		}
		if c.Kind == engine.ChangeAssign {
			ids[c.Owner] = true
		}
	}
	nodes, err := s.lockNodes(ctx, tx, ids)
	if err != nil {
		return engine.ApplyReply{}, err
	}
	dying := map[string]bool{}
	for _, d := range b.Dead {
		n, ok := nodes[d.ID]
		switch {
		case !ok || d.Incarnation > n.incarnation:
			return engine.ApplyReply{}, fmt.Errorf("declare %s/%d dead: no such incarnation: %w", d.ID, d.Incarnation, engine.ErrConflict)
		case d.Incarnation < n.incarnation || n.status == engine.NodeDead:
			// already dead: nothing to do (a retried batch succeeds)
		case n.age <= b.DeadAfter:
			return engine.ApplyReply{}, fmt.Errorf("declare %s/%d dead: heartbeat %v old (server time), not older than %v: %w", d.ID, d.Incarnation, n.age, b.DeadAfter, engine.ErrConflict)
		default:
			dying[d.ID] = true
		}
	}
	isLive := func(id string, inc uint64) bool {
		n, ok := nodes[id]
		return ok && n.incarnation == inc && n.status == engine.NodeAlive && !dying[id]
	}
	var configured map[[2]string]int
	for _, c := range b.Changes {
		if c.Kind == engine.ChangeAssign || c.Kind == engine.ChangeDelete {
			if configured, err = s.readTaskLists(ctx, tx); err != nil {
				return engine.ApplyReply{}, err
			}
			break
		}
	}
	isConfigured := func(p engine.PartitionID) bool {
		n, ok := configured[[2]string{p.Domain, p.TaskList}]
		return ok && p.Partition < n
	}
	// 5. Each change's revision and precondition.
	next := make([]engine.Assignment, len(b.Changes))
	touched := map[string]bool{}
	for i, c := range b.Changes {
		r, ok := cur[c.Partition]
		if !ok {
			return engine.ApplyReply{}, fmt.Errorf("%s %s: no such row: %w", c.Kind, c.Partition, engine.ErrConflict)
		}
		if r.Revision != c.Revision {
			return engine.ApplyReply{}, fmt.Errorf("%s %s: row is at revision %d, not %d: %w", c.Kind, c.Partition, r.Revision, c.Revision, engine.ErrConflict)
		}
		held := r.State == engine.Assigned || r.State == engine.Releasing
		ownerLive := held && isLive(r.Owner, r.Incarnation)
		n := r
		n.Epoch = b.Fence.Epoch
		switch c.Kind {
		case engine.ChangeAssign:
			if !(r.State == engine.Unassigned || (held && !ownerLive)) {
				return engine.ApplyReply{}, fmt.Errorf("assign %s: row is %s by %s/%d: %w", c.Partition, r.State, r.Owner, r.Incarnation, engine.ErrConflict)
			}
			if !isConfigured(c.Partition) {
				return engine.ApplyReply{}, fmt.Errorf("assign %s: partition is not configured: %w", c.Partition, engine.ErrConflict)
			}
			if !isLive(c.Owner, c.Incarnation) {
				return engine.ApplyReply{}, fmt.Errorf("assign %s: %s/%d is not a live incarnation: %w", c.Partition, c.Owner, c.Incarnation, engine.ErrConflict)
			}
			n.State, n.Owner, n.Incarnation, n.Generation, n.Target = engine.Assigned, c.Owner, c.Incarnation, r.Generation+1, ""
		case engine.ChangeRelease:
			if r.State != engine.Assigned || !ownerLive {
				return engine.ApplyReply{}, fmt.Errorf("release %s: row is %s by %s/%d (live %v): %w", c.Partition, r.State, r.Owner, r.Incarnation, ownerLive, engine.ErrConflict)
			}
			n.State, n.Target = engine.Releasing, c.Target
		case engine.ChangeUnassign:
			if !(held && !ownerLive) {
				return engine.ApplyReply{}, fmt.Errorf("unassign %s: row is %s by %s/%d (live %v): %w", c.Partition, r.State, r.Owner, r.Incarnation, ownerLive, engine.ErrConflict)
			}
			n.State, n.Owner, n.Incarnation = engine.Unassigned, "", 0
		case engine.ChangeDelete:
			if r.State == engine.Deleted || ownerLive {
				return engine.ApplyReply{}, fmt.Errorf("delete %s: row is %s by %s/%d (live %v): %w", c.Partition, r.State, r.Owner, r.Incarnation, ownerLive, engine.ErrConflict)
			}
			if isConfigured(c.Partition) {
				return engine.ApplyReply{}, fmt.Errorf("delete %s: partition is still configured: %w", c.Partition, engine.ErrConflict)
			}
			n.State, n.Owner, n.Incarnation, n.Target = engine.Deleted, "", 0, ""
		}
		// Old and new owners, and the node the row was or is on its way to.
		for _, id := range []string{r.Owner, n.Owner, r.IncomingTo(), n.IncomingTo()} {
			if id != "" {
				touched[id] = true
			}
		}
		rev++
		n.Revision = rev
		next[i] = n
	}
	// 6. Writes.
	if len(dying) > 0 {
		if err := s.updateNodes(ctx, tx, "status = 1", dying); err != nil {
			return engine.ApplyReply{}, err
		}
	}
	if err := s.writeRows(ctx, tx, b.Fence.Epoch, next); err != nil {
		return engine.ApplyReply{}, err
	}
	if len(touched) > 0 {
		// One multi-row statement for owners and targets alike. Targets were not locked
		// above (nothing is checked about them); taking their row locks here cannot
		// deadlock, since writers of assignment rows are serialised by the revision row
		// and everyone else locks one node row at a time.
		if err := s.updateNodes(ctx, tx, "assign_rev = assign_rev + 1", touched); err != nil {
			return engine.ApplyReply{}, err
		}
	}
	// The batch marker, and the new revision with it in one statement: every round trip
	// inside the transaction is time its locks are held.
	if len(next) > 0 {
		_, err = tx.ExecContext(ctx, "UPDATE helix_revision r JOIN helix_leases l ON l.cluster = r.cluster AND l.lock_key = ? "+
			"SET r.revision = ?, l.last_batch = ? WHERE r.cluster = ?", b.Fence.Key, rev, batchID, s.cluster)
	} else {
		_, err = tx.ExecContext(ctx, "UPDATE helix_leases SET last_batch = ? WHERE cluster = ? AND lock_key = ?", batchID, s.cluster, b.Fence.Key)
	}
	if err != nil {
		return engine.ApplyReply{}, err
	}
	return engine.ApplyReply{Reply: engine.Reply{Now: now}, Revision: rev}, nil
}

const rowColumns = "domain, tasklist, part_no, owner_id, incarnation, generation, state, target, epoch, revision"

func scanRow(rows *sql.Rows) (engine.Assignment, error) {
	var a engine.Assignment
	var st uint8
	err := rows.Scan(&a.Partition.Domain, &a.Partition.TaskList, &a.Partition.Partition, &a.Owner, &a.Incarnation, &a.Generation, &st, &a.Target, &a.Epoch, &a.Revision)
	a.State = engine.PartitionState(st)
	return a, err
}

// lockRows reads (FOR UPDATE) the rows of the given changes, in primary-key order, up
// to chunk rows per statement: an OR of (domain, tasklist, part_no IN (…)) groups, which
// both MySQL and MariaDB turn into a union of primary-key ranges (no gap scans).
func (s *Store) lockRows(ctx context.Context, tx *sql.Tx, changes []engine.Change) (map[engine.PartitionID]engine.Assignment, error) {
	out := make(map[engine.PartitionID]engine.Assignment, len(changes))
	ps := make([]engine.PartitionID, 0, len(changes))
	for _, c := range changes {
		ps = append(ps, c.Partition)
	}
	slices.SortFunc(ps, engine.ComparePartitions)
	for i := 0; i < len(ps); i += chunk {
		part := ps[i:min(i+chunk, len(ps))]
		var q strings.Builder
		args := []any{s.cluster}
		q.WriteString("SELECT " + rowColumns + " FROM helix_assignments WHERE cluster = ? AND (")
		for j := 0; j < len(part); {
			k := j
			for k < len(part) && part[k].Domain == part[j].Domain && part[k].TaskList == part[j].TaskList {
				k++
			}
			if j > 0 {
				q.WriteString(" OR ")
			}
			q.WriteString("(domain = ? AND tasklist = ? AND part_no IN (" + placeholders(k-j) + "))")
			args = append(args, part[j].Domain, part[j].TaskList)
			for _, p := range part[j:k] {
				args = append(args, p.Partition)
			}
			j = k
		}
		q.WriteString(") FOR UPDATE")
		rows, err := tx.QueryContext(ctx, q.String(), args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			a, err := scanRow(rows)
			if err != nil {
				rows.Close()
				return nil, err
			}
			out[a.Partition] = a
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

func sortedIDs(ids map[string]bool) []string {
	out := make([]string, 0, len(ids))
	for id := range ids {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// eachIDChunk calls fn for the ids in sorted order (the lock order), up to chunk at a
// time, with the WHERE condition "cluster = ? AND id IN (…)" and its arguments.
func (s *Store) eachIDChunk(ids map[string]bool, fn func(where string, args []any) error) error {
	list := sortedIDs(ids)
	for i := 0; i < len(list); i += chunk {
		part := list[i:min(i+chunk, len(list))]
		args := make([]any, 0, len(part)+1)
		args = append(args, s.cluster)
		for _, id := range part {
			args = append(args, id)
		}
		if err := fn("cluster = ? AND id IN ("+placeholders(len(part))+")", args); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) lockNodes(ctx context.Context, tx *sql.Tx, ids map[string]bool) (map[string]nodeRow, error) {
	out := map[string]nodeRow{}
	err := s.eachIDChunk(ids, func(where string, args []any) error {
		rows, err := tx.QueryContext(ctx, "SELECT id, incarnation, status, TIMESTAMPDIFF(MICROSECOND, last_heartbeat, UTC_TIMESTAMP(6)) FROM helix_nodes WHERE "+
			where+" FOR UPDATE", args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var n nodeRow
			var st uint8
			var age int64
			if err := rows.Scan(&id, &n.incarnation, &st, &age); err != nil {
				return err
			}
			n.status, n.age = engine.NodeStatus(st), time.Duration(age)*time.Microsecond
			out[id] = n
		}
		return rows.Err()
	})
	return out, err
}

func (s *Store) updateNodes(ctx context.Context, tx *sql.Tx, set string, ids map[string]bool) error {
	return s.eachIDChunk(ids, func(where string, args []any) error {
		_, err := tx.ExecContext(ctx, "UPDATE helix_nodes SET "+set+" WHERE "+where, args...)
		return err
	})
}

func (s *Store) readTaskLists(ctx context.Context, tx *sql.Tx) (map[[2]string]int, error) {
	rows, err := tx.QueryContext(ctx, "SELECT domain, name, partitions FROM helix_tasklists WHERE cluster = ?", s.cluster)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[[2]string]int{}
	for rows.Next() {
		var d, n string
		var p int
		if err := rows.Scan(&d, &n, &p); err != nil {
			return nil, err
		}
		out[[2]string{d, n}] = p
	}
	return out, rows.Err()
}

// writeRows writes the new row values with multi-row UPDATEs: the values ride in a
// derived table of UNION ALL SELECTs (portable between MySQL and MariaDB, unlike VALUES
// ROW) joined on the primary key. The epoch guard is repeated in SQL, and the matched
// count (clientFoundRows) must equal the rows sent.
func (s *Store) writeRows(ctx context.Context, tx *sql.Tx, epoch uint64, next []engine.Assignment) error {
	for i := 0; i < len(next); i += chunk {
		part := next[i:min(i+chunk, len(next))]
		var q strings.Builder
		args := make([]any, 0, len(part)*9+3)
		q.WriteString("UPDATE helix_assignments a JOIN (")
		for j, r := range part {
			if j == 0 {
				q.WriteString("SELECT ? AS d, ? AS t, ? AS p, ? AS o, ? AS i, ? AS g, ? AS s, ? AS tg, ? AS r")
			} else {
				q.WriteString(" UNION ALL SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?")
			}
			args = append(args, r.Partition.Domain, r.Partition.TaskList, r.Partition.Partition, r.Owner, r.Incarnation, r.Generation, uint8(r.State), r.Target, r.Revision)
		}
		q.WriteString(") v ON a.cluster = ? AND a.domain = v.d AND a.tasklist = v.t AND a.part_no = v.p " +
			"SET a.owner_id = v.o, a.incarnation = v.i, a.generation = v.g, a.state = v.s, a.target = v.tg, a.epoch = ?, a.revision = v.r WHERE a.epoch <= ?")
		args = append(args, s.cluster, epoch, epoch)
		res, err := tx.ExecContext(ctx, q.String(), args...)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n != int64(len(part)) {
			return fmt.Errorf("multi-row update matched %d rows of %d: %w", n, len(part), engine.ErrConflict)
		}
	}
	return nil
}

// AckRelease implements engine.Store. Checks in the reference store's order:
// ErrNodeDead, ErrNotFound, ErrConflict.
func (s *Store) AckRelease(ctx context.Context, a engine.Ack) (engine.Reply, error) {
	if err := engine.ValidateAck(a); err != nil {
		return engine.Reply{}, err
	}
	return s.ownerWrite(ctx, "ack_release", "ack", a, engine.Releasing, func(tx *sql.Tx, r engine.Assignment, _ time.Time, newRev uint64) error {
		// One statement writes the row, the revision, and the nodes: the owner loses the
		// row; its target learns the release was acknowledged (the row stays on its way
		// to it until assigned). A multi-table UPDATE changes each matched row once.
		nodes2 := []any{a.Node, a.Node}
		if to := r.IncomingTo(); to != "" {
			nodes2[1] = to
		}
		_, err := tx.ExecContext(ctx, "UPDATE helix_assignments a JOIN helix_revision r ON r.cluster = a.cluster "+
			"JOIN helix_nodes n ON n.cluster = a.cluster AND n.id IN (?, ?) "+
			"SET a.state = 0, a.owner_id = '', a.incarnation = 0, a.revision = ?, r.revision = ?, n.assign_rev = n.assign_rev + 1 "+
			"WHERE a.cluster = ? AND a.domain = ? AND a.tasklist = ? AND a.part_no = ?",
			nodes2[0], nodes2[1], newRev, newRev, s.cluster, a.Partition.Domain, a.Partition.TaskList, a.Partition.Partition)
		return err
	})
}

// GiveBack implements engine.Store: the owner hands back an Assigned row whose handler
// keeps failing on it. Checks in the reference store's order: ErrNodeDead, ErrNotFound,
// ErrConflict.
func (s *Store) GiveBack(ctx context.Context, g engine.Ack) (engine.Reply, error) {
	if err := engine.ValidateGiveBack(g); err != nil {
		return engine.Reply{}, err
	}
	return s.ownerWrite(ctx, "give_back", "give back", g, engine.Assigned, func(tx *sql.Tx, _ engine.Assignment, now time.Time, newRev uint64) error {
		if _, err := tx.ExecContext(ctx, "UPDATE helix_assignments SET state = 0, owner_id = '', incarnation = 0, target = '', "+
			"given_back_by = ?, given_back_at = TIMESTAMPADD(MICROSECOND, ?, '1970-01-01 00:00:00'), revision = ? "+
			"WHERE cluster = ? AND domain = ? AND tasklist = ? AND part_no = ?",
			g.Node, now.UnixMicro(), newRev, s.cluster, g.Partition.Domain, g.Partition.TaskList, g.Partition.Partition); err != nil {
			return err
		}
		if err := s.updateNodes(ctx, tx, "assign_rev = assign_rev + 1", map[string]bool{g.Node: true}); err != nil {
			return err
		}
		return setRevision(ctx, tx, s.cluster, newRev)
	})
}

// ownerWrite runs a write of one row by its owner (a release acknowledgement, a
// give-back) with the reference store's order of checks: the owner's incarnation is
// alive (ErrNodeDead), the row exists (ErrNotFound), and it is in state want at the
// owner's incarnation and generation (ErrConflict). write changes the locked row r and
// gives it revision newRev; now is store time. An ambiguous commit is resolved by reading
// the row's revision back: nobody but this write could give it newRev.
func (s *Store) ownerWrite(ctx context.Context, op, verb string, a engine.Ack, want engine.PartitionState,
	write func(tx *sql.Tx, r engine.Assignment, now time.Time, newRev uint64) error) (engine.Reply, error) {
	var now time.Time
	var newRev uint64
	err := s.inTx(ctx, op, func(tx *sql.Tx) error {
		rev, n, err := s.lockRevision(ctx, tx)
		if err != nil {
			return err
		}
		now = n
		nodes, err := s.lockNodes(ctx, tx, map[string]bool{a.Node: true})
		if err != nil {
			return err
		}
		if nd, ok := nodes[a.Node]; !ok || nd.incarnation != a.Incarnation || nd.status != engine.NodeAlive {
			return fmt.Errorf("%s %s by %s/%d: %w", verb, a.Partition, a.Node, a.Incarnation, engine.ErrNodeDead)
		}
		cur, err := s.lockRows(ctx, tx, []engine.Change{{Partition: a.Partition}})
		if err != nil {
			return err
		}
		r, ok := cur[a.Partition]
		if !ok {
			return fmt.Errorf("%s %s: no such row: %w", verb, a.Partition, engine.ErrNotFound)
		}
		if r.State != want || r.Owner != a.Node || r.Incarnation != a.Incarnation || r.Generation != a.Generation {
			return fmt.Errorf("%s %s by %s/%d at generation %d: row is %s by %s/%d at generation %d: %w",
				verb, a.Partition, a.Node, a.Incarnation, a.Generation, r.State, r.Owner, r.Incarnation, r.Generation, engine.ErrConflict)
		}
		newRev = rev + 1
		return write(tx, r, now, newRev)
	}, func(ctx context.Context) (bool, error) {
		var rev uint64
		err := s.db.QueryRowContext(ctx, "SELECT revision FROM helix_assignments WHERE cluster = ? AND domain = ? AND tasklist = ? AND part_no = ?",
			s.cluster, a.Partition.Domain, a.Partition.TaskList, a.Partition.Partition).Scan(&rev)
		if err != nil {
			return false, err
		}
		return rev == newRev, nil
	})
	if err != nil {
		return engine.Reply{}, err
	}
	return engine.Reply{Now: now}, nil
}
