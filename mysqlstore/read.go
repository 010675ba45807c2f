package mysqlstore

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/helixcoord/helix/engine"
)

// unionParts selects what readUnion reads, in ONE statement: a UNION ALL of a meta row
// (server clock, store revision, optionally one node's assignment revision) and the
// requested tables. One statement is one InnoDB read view, so the parts are mutually
// consistent without a transaction (and cost one round trip).
type unionParts struct {
	nodes, taskLists bool
	rows             bool
	since            uint64
	// nodeID set: the node's assignment revision, its Assigned/Releasing rows at
	// incarnation, and the partitions on their way to it (the heartbeat's slow path).
	nodeID      string
	incarnation uint64
}

type unionResult struct {
	now      time.Time
	revision uint64
	nodeRev  uint64
	// nodeDraining: the draining flag of unionParts.nodeID.
	nodeDraining bool
	nodes        []engine.NodeInfo
	taskLists    []engine.TaskList
	rows         []engine.Assignment
	incoming     []engine.PartitionID
}

// Column layout: k, s1..s4 (names), n1..n6 (numbers), b (labels).
func (p unionParts) build(cluster string) (string, []any) {
	var q strings.Builder
	var args []any
	q.WriteString("SELECT 0 AS k, X'' AS s1, X'' AS s2, X'' AS s3, X'' AS s4, " +
		"COALESCE((SELECT revision FROM helix_revision WHERE cluster = ?), 0) AS n1, " + nowUS + " AS n2, ")
	args = append(args, cluster)
	if p.nodeID != "" {
		q.WriteString("COALESCE((SELECT assign_rev FROM helix_nodes WHERE cluster = ? AND id = ?), 0) AS n3, " +
			"COALESCE((SELECT draining FROM helix_nodes WHERE cluster = ? AND id = ?), 0) AS n4, ")
		args = append(args, cluster, p.nodeID, cluster, p.nodeID)
	} else {
		q.WriteString("0 AS n3, 0 AS n4, ")
	}
	q.WriteString("0 AS n5, 0 AS n6, X'' AS b")
	if p.nodes {
		q.WriteString(" UNION ALL SELECT 1, id, process, host, CONCAT_WS(X'00', CAST(pid AS BINARY), replace_process, replace_host, CAST(replace_pid AS BINARY)), incarnation, capacity, draining, status, " + us("last_heartbeat") +
			", TIMESTAMPDIFF(MICROSECOND, last_heartbeat, UTC_TIMESTAMP(6)), labels FROM helix_nodes WHERE cluster = ?")
		args = append(args, cluster)
	}
	if p.taskLists {
		q.WriteString(" UNION ALL SELECT 2, domain, name, X'', X'', partitions, 0, 0, 0, 0, 0, X'' FROM helix_tasklists WHERE cluster = ?")
		args = append(args, cluster)
	}
	// The last column carries the give-back (GivenBackBy NUL GivenBackAt in µs), empty
	// when the row was never given back: names hold no control characters.
	const rowCols = " UNION ALL SELECT 3, domain, tasklist, owner_id, target, part_no, incarnation, generation, state, epoch, revision, " +
		"IF(given_back_by = '', X'', CONCAT(given_back_by, X'00', CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', given_back_at) AS CHAR))) FROM helix_assignments"
	if p.rows {
		q.WriteString(rowCols + " WHERE cluster = ? AND revision > ?")
		args = append(args, cluster, p.since)
	}
	if p.nodeID != "" {
		q.WriteString(rowCols + " WHERE cluster = ? AND owner_id = ? AND incarnation = ? AND state IN (1, 2)")
		args = append(args, cluster, p.nodeID, p.incarnation)
		// On its way to the node: Releasing, or Unassigned after the release, with the
		// node as target (index helix_assignments_by_target).
		q.WriteString(" UNION ALL SELECT 4, domain, tasklist, X'', X'', part_no, 0, 0, 0, 0, 0, X'' FROM helix_assignments" +
			" WHERE cluster = ? AND target = ? AND state IN (0, 2)")
		args = append(args, cluster, p.nodeID)
	}
	return q.String(), args
}

func (s *Store) readUnion(ctx context.Context, p unionParts) (unionResult, error) {
	res, err := s.readUnionOnce(ctx, p)
	if err == nil && p.rows && p.since > res.revision {
		// A since beyond the store's revision cannot come from this store (a restored
		// backup?): answer with everything, so the caller resynchronises.
		p.since = 0
		res, err = s.readUnionOnce(ctx, p)
	}
	return res, err
}

func (s *Store) readUnionOnce(ctx context.Context, p unionParts) (unionResult, error) {
	query, args := p.build(s.cluster)
	bo := newBackoff()
	for {
		res, err := s.scanUnion(ctx, query, args)
		if err == nil || !retryable(err) || !bo.wait(ctx) {
			return res, err
		}
	}
}

func (s *Store) scanUnion(ctx context.Context, query string, args []any) (unionResult, error) {
	var res unionResult
	start := time.Now()
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return res, err
	}
	defer rows.Close()
	var (
		k                      int
		s1, s2, s3, s4, b      []byte
		n1, n2, n3, n4, n5, n6 int64
	)
	for rows.Next() {
		if err := rows.Scan(&k, &s1, &s2, &s3, &s4, &n1, &n2, &n3, &n4, &n5, &n6, &b); err != nil {
			return res, err
		}
		switch k {
		case 0:
			res.revision, res.nodeRev, res.nodeDraining = uint64(n1), uint64(n3), n4 != 0
			res.now = s.observe(n2, start)
		case 1:
			labels, err := decodeLabels(b)
			if err != nil {
				return res, err
			}
			res.nodes = append(res.nodes, engine.NodeInfo{
				ID: string(s1), Incarnation: uint64(n1), Capacity: int(n2), Labels: labels, Draining: n3 != 0,
				Status: engine.NodeStatus(n4), LastHeartbeat: fromUS(n5), HeartbeatAge: time.Duration(n6) * time.Microsecond,
				Process: string(s2), Host: string(s3),
			})
			if err := decodeProcess(s4, &res.nodes[len(res.nodes)-1]); err != nil {
				return res, err
			}
		case 2:
			res.taskLists = append(res.taskLists, engine.TaskList{Domain: string(s1), Name: string(s2), Partitions: int(n1)})
		case 4:
			res.incoming = append(res.incoming, engine.PartitionID{Domain: string(s1), TaskList: string(s2), Partition: int(n1)})
		case 3:
			res.rows = append(res.rows, engine.Assignment{
				Partition: engine.PartitionID{Domain: string(s1), TaskList: string(s2), Partition: int(n1)},
				Owner:     string(s3), Target: string(s4), Incarnation: uint64(n2), Generation: uint64(n3),
				State: engine.PartitionState(n4), Epoch: uint64(n5), Revision: uint64(n6),
			})
			if len(b) > 0 {
				if err := decodeGivenBack(b, &res.rows[len(res.rows)-1]); err != nil {
					return res, err
				}
			}
		}
	}
	if err := rows.Err(); err != nil {
		return res, err
	}
	sortNodes(res.nodes)
	slices.SortFunc(res.taskLists, func(a, b engine.TaskList) int {
		if c := strings.Compare(a.Domain, b.Domain); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	sortRows(res.rows)
	slices.SortFunc(res.incoming, engine.ComparePartitions)
	return res, nil
}

func sortRows(rows []engine.Assignment) {
	slices.SortFunc(rows, func(a, b engine.Assignment) int { return engine.ComparePartitions(a.Partition, b.Partition) })
}

// ReadState implements engine.Store: one SELECT.
func (s *Store) ReadState(ctx context.Context, since uint64) (engine.StateReply, error) {
	st, err := s.readUnion(ctx, unionParts{nodes: true, taskLists: true, rows: true, since: since})
	if err != nil {
		return engine.StateReply{}, s.wrap("read_state", err)
	}
	return engine.StateReply{Reply: engine.Reply{Now: st.now}, Nodes: st.nodes, TaskLists: st.taskLists, Revision: st.revision, Assignments: st.rows}, nil
}

// ReadAssignments implements engine.Store: one SELECT.
func (s *Store) ReadAssignments(ctx context.Context, since uint64) (engine.AssignmentsReply, error) {
	st, err := s.readUnion(ctx, unionParts{rows: true, since: since})
	if err != nil {
		return engine.AssignmentsReply{}, s.wrap("read_assignments", err)
	}
	return engine.AssignmentsReply{Reply: engine.Reply{Now: st.now}, Revision: st.revision, Assignments: st.rows}, nil
}

// ListTaskLists implements engine.Store: one SELECT.
func (s *Store) ListTaskLists(ctx context.Context) (engine.TaskListsReply, error) {
	st, err := s.readUnion(ctx, unionParts{taskLists: true})
	if err != nil {
		return engine.TaskListsReply{}, s.wrap("list_tasklists", err)
	}
	return engine.TaskListsReply{Reply: engine.Reply{Now: st.now}, TaskLists: st.taskLists}, nil
}

// decodeProcess reads the pid, replace_process, replace_host and replace_pid columns of a
// node, which the union carries NUL-separated in one column (names and hosts have no
// control characters).
func decodeProcess(b []byte, n *engine.NodeInfo) error {
	parts := strings.Split(string(b), "\x00")
	if len(parts) != 4 {
		return fmt.Errorf("corrupt process columns %q: %w", b, ErrSchema)
	}
	pid, err1 := strconv.Atoi(parts[0])
	rpid, err2 := strconv.Atoi(parts[3])
	if err1 != nil || err2 != nil {
		return fmt.Errorf("corrupt pid columns %q: %w", b, ErrSchema)
	}
	n.PID = pid
	n.ReplaceBy = engine.NodeProcess{Process: parts[1], Host: parts[2], PID: rpid}
	return nil
}

// decodeGivenBack parses the give-back column of a row: "node NUL microseconds".
func decodeGivenBack(b []byte, a *engine.Assignment) error {
	by, at, ok := bytes.Cut(b, []byte{0})
	v, err := strconv.ParseInt(string(at), 10, 64)
	if !ok || err != nil {
		return fmt.Errorf("mysqlstore: malformed given_back of %s: %q", a.Partition, b)
	}
	a.GivenBackBy, a.GivenBackAt = string(by), fromUS(v)
	return nil
}
