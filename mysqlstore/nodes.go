package mysqlstore

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/helixcoord/helix/engine"
)

// Labels are stored losslessly (a label value need not be UTF-8) as a sequence of
// uvarint-length-prefixed key and value strings.
func encodeLabels(ls []engine.Label) []byte {
	var b []byte
	for _, l := range ls {
		b = binary.AppendUvarint(b, uint64(len(l.Key)))
		b = append(b, l.Key...)
		b = binary.AppendUvarint(b, uint64(len(l.Value)))
		b = append(b, l.Value...)
	}
	if b == nil {
		b = []byte{}
	}
	return b
}

func decodeLabels(b []byte) ([]engine.Label, error) {
	var out []engine.Label
	next := func() (string, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return "", fmt.Errorf("corrupt labels column: %w", ErrSchema)
		}
		s := string(b[k : k+int(n)])
		b = b[k+int(n):]
		return s, nil
	}
	for len(b) > 0 {
		k, err := next()
		if err != nil {
			return nil, err
		}
		v, err := next()
		if err != nil {
			return nil, err
		}
		out = append(out, engine.Label{Key: k, Value: v})
	}
	return out, nil
}

// RegisterNode implements engine.Store: the new incarnation is the previous + 1 (1 for a
// new id, or above every incarnation PruneNodes deleted); the row is replaced in place
// (only PruneNodes deletes rows, and it records what it deleted, so incarnations never
// repeat) and the node's assignment revision grows, so its first heartbeat gets its
// (empty) list whatever it passes as known.
func (s *Store) RegisterNode(ctx context.Context, spec engine.NodeSpec) (engine.RegisterReply, error) {
	if err := engine.ValidateNodeSpec(spec); err != nil {
		return engine.RegisterReply{}, err
	}
	labels := encodeLabels(spec.Labels)
	var reply engine.RegisterReply
	var held *engine.NodeInUseError
	err := s.inTx(ctx, "register", func(tx *sql.Tx) error {
		held = nil
		var cur engine.NodeInfo
		var status uint8
		var process, host, rProcess, rHost []byte
		var hbV, nowV int64
		start := time.Now()
		err := tx.QueryRowContext(ctx, "SELECT incarnation, status, process, host, pid, replace_process, replace_host, replace_pid, "+
			us("last_heartbeat")+", "+nowUS+" FROM helix_nodes WHERE cluster = ? AND id = ? FOR UPDATE", s.cluster, spec.ID).
			Scan(&cur.Incarnation, &status, &process, &host, &cur.PID, &rProcess, &rHost, &cur.ReplaceBy.PID, &hbV, &nowV)
		inc := cur.Incarnation
		var now time.Time
		switch {
		case errors.Is(err, sql.ErrNoRows):
			if now, err = s.nowOn(ctx, tx); err != nil {
				return err
			}
			// A new id starts at 1 — or above every incarnation PruneNodes deleted, in
			// case this id is one of them (see PruneNodes).
			if inc, err = s.incarnationFloor(ctx, tx); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, "INSERT INTO helix_nodes (cluster, id, incarnation, capacity, labels, draining, status, last_heartbeat, assign_rev, process, host, pid) "+
				"VALUES (?, ?, ?, ?, ?, 0, 0, ?, 1, ?, ?, ?)", s.cluster, spec.ID, inc+1, spec.Capacity, labels, now, spec.Process, spec.Host, spec.PID)
			if isDup(err) {
				return &retryNow{err}
			}
		case err != nil:
			return err
		default:
			now = s.observe(nowV, start)
			cur.ID, cur.Status, cur.Process, cur.Host, cur.LastHeartbeat = spec.ID, engine.NodeStatus(status), string(process), string(host), fromUS(hbV)
			cur.ReplaceBy.Process, cur.ReplaceBy.Host = string(rProcess), string(rHost)
			// Judged on the server's clock: both timestamps come from UTC_TIMESTAMP(6).
			if held = engine.RegistrationHeld(spec, cur, fromUS(nowV)); held != nil {
				held.Now = now
				if held.Pending && cur.ReplaceBy != held.By {
					// A takeover starts: from now on the holder's heartbeats are refused.
					_, err = tx.ExecContext(ctx, "UPDATE helix_nodes SET replace_process = ?, replace_host = ?, replace_pid = ? WHERE cluster = ? AND id = ?",
						held.By.Process, held.By.Host, held.By.PID, s.cluster, spec.ID)
				}
				return err
			}
			_, err = tx.ExecContext(ctx, "UPDATE helix_nodes SET incarnation = ?, capacity = ?, labels = ?, draining = 0, status = 0, "+
				"last_heartbeat = ?, assign_rev = assign_rev + 1, process = ?, host = ?, pid = ?, replace_process = '', replace_host = '', replace_pid = 0 "+
				"WHERE cluster = ? AND id = ?",
				inc+1, spec.Capacity, labels, now, spec.Process, spec.Host, spec.PID, s.cluster, spec.ID)
		}
		reply = engine.RegisterReply{Reply: engine.Reply{Now: now}, Incarnation: inc + 1}
		return err
	}, func(ctx context.Context) (bool, error) {
		// Nobody but us knows the new incarnation yet: seeing it means we committed.
		var inc uint64
		err := s.db.QueryRowContext(ctx, "SELECT incarnation FROM helix_nodes WHERE cluster = ? AND id = ?", s.cluster, spec.ID).Scan(&inc)
		if errors.Is(err, sql.ErrNoRows) {
			return false, nil
		}
		return err == nil && inc == reply.Incarnation, err
	})
	if err != nil {
		return engine.RegisterReply{}, err
	}
	if held != nil {
		return engine.RegisterReply{}, held
	}
	return reply, nil
}

// Heartbeat implements engine.Store. Steady state is one statement: a primary-key
// UPDATE that matches only if the incarnation is alive and its assignment revision is
// the caller's known one. Its reply's Now is the estimate described in the package doc
// (the statement does not read the server clock back). Otherwise a second UPDATE
// records the heartbeat if the incarnation is alive (else ErrNodeDead), and one SELECT
// reads the node's revision, the server's clock, its rows and the partitions on their
// way to it consistently.
func (s *Store) Heartbeat(ctx context.Context, id string, incarnation uint64, known uint64) (engine.HeartbeatReply, error) {
	if err := engine.ValidateNodeIncarnation(id, incarnation); err != nil {
		return engine.HeartbeatReply{}, err
	}
	n, err := s.exec(ctx, "UPDATE helix_nodes SET last_heartbeat = UTC_TIMESTAMP(6) "+
		"WHERE cluster = ? AND id = ? AND incarnation = ? AND status = 0 AND assign_rev = ? AND replace_process = ''", s.cluster, id, incarnation, known)
	if err != nil {
		return engine.HeartbeatReply{}, s.wrap("heartbeat", err)
	}
	if n == 1 {
		return engine.HeartbeatReply{Reply: engine.Reply{Now: s.estimatedNow()}, AssignRevision: known}, nil
	}
	n, err = s.exec(ctx, "UPDATE helix_nodes SET last_heartbeat = UTC_TIMESTAMP(6) "+
		"WHERE cluster = ? AND id = ? AND incarnation = ? AND status = 0 AND replace_process = ''", s.cluster, id, incarnation)
	if err != nil {
		return engine.HeartbeatReply{}, s.wrap("heartbeat", err)
	}
	if n == 0 {
		return engine.HeartbeatReply{}, s.wrap("heartbeat", fmt.Errorf("heartbeat %s/%d: unknown, replaced, being replaced, deregistered or declared dead: %w", id, incarnation, engine.ErrNodeDead))
	}
	st, err := s.readUnion(ctx, unionParts{nodeID: id, incarnation: incarnation})
	if err != nil {
		return engine.HeartbeatReply{}, s.wrap("heartbeat", err)
	}
	r := engine.HeartbeatReply{Reply: engine.Reply{Now: st.now}, AssignRevision: st.nodeRev}
	if st.nodeRev != known {
		r.Changed = true
		r.Assignments = st.rows
		r.Incoming = st.incoming
		r.Draining = st.nodeDraining
	}
	return r, nil
}

// DeregisterNode implements engine.Store: idempotent; ErrNotFound if the id is unknown
// or the incarnation was never issued.
func (s *Store) DeregisterNode(ctx context.Context, id string, incarnation uint64) (engine.Reply, error) {
	if err := engine.ValidateNodeIncarnation(id, incarnation); err != nil {
		return engine.Reply{}, err
	}
	if _, err := s.exec(ctx, "UPDATE helix_nodes SET status = 1 WHERE cluster = ? AND id = ? AND incarnation = ? AND status = 0", s.cluster, id, incarnation); err != nil {
		return engine.Reply{}, s.wrap("deregister", err)
	}
	var cur uint64
	var nowV int64
	start := time.Now()
	err := s.queryRow(ctx, "SELECT incarnation, "+nowUS+" FROM helix_nodes WHERE cluster = ? AND id = ?", []any{s.cluster, id}, &cur, &nowV)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && incarnation > cur) {
		return engine.Reply{}, s.wrap("deregister", fmt.Errorf("deregister %s/%d: %w", id, incarnation, engine.ErrNotFound))
	}
	if err != nil {
		return engine.Reply{}, s.wrap("deregister", err)
	}
	return engine.Reply{Now: s.observe(nowV, start)}, nil
}

// UpdateNode implements engine.Store (whatever the node's status; ErrNotFound if the id
// is unknown).
func (s *Store) UpdateNode(ctx context.Context, id string, u engine.NodeUpdate) (engine.Reply, error) {
	if err := engine.ValidateNodeUpdate(id, u); err != nil {
		return engine.Reply{}, err
	}
	sets := []string{"draining = draining"}
	var args []any
	if u.Draining != nil {
		// A change of the flag grows the node's assignment revision, so that its next
		// heartbeat takes the slow path and reports it (HeartbeatReply.Draining). MySQL
		// assigns left to right: the comparison must see the old flag.
		sets = append(sets, "assign_rev = assign_rev + (draining <> ?)", "draining = ?")
		args = append(args, *u.Draining, *u.Draining)
	}
	if u.Capacity != nil {
		sets = append(sets, "capacity = ?")
		args = append(args, *u.Capacity)
	}
	if u.Labels != nil {
		sets = append(sets, "labels = ?")
		args = append(args, encodeLabels(*u.Labels))
	}
	args = append(args, s.cluster, id)
	where := " WHERE cluster = ? AND id = ?"
	if u.Incarnation != 0 {
		// A node's own update: only while that incarnation is the current, live one.
		where += " AND incarnation = ? AND status = 0"
		args = append(args, u.Incarnation)
	}
	n, err := s.exec(ctx, "UPDATE helix_nodes SET "+strings.Join(sets, ", ")+where, args...)
	if err != nil {
		return engine.Reply{}, s.wrap("update_node", err)
	}
	if n == 0 && u.Incarnation != 0 {
		var cur uint64
		err := s.queryRow(ctx, "SELECT incarnation FROM helix_nodes WHERE cluster = ? AND id = ?", []any{s.cluster, id}, &cur)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return engine.Reply{}, s.wrap("update_node", err)
		default:
			return engine.Reply{}, s.wrap("update_node", fmt.Errorf("update node %s/%d: current incarnation is %d or it is dead: %w", id, u.Incarnation, cur, engine.ErrNodeDead))
		}
	}
	if n == 0 {
		return engine.Reply{}, s.wrap("update_node", fmt.Errorf("update node %s: %w", id, engine.ErrNotFound))
	}
	now, err := s.serverNow(ctx)
	if err != nil {
		return engine.Reply{}, s.wrap("update_node", err)
	}
	return engine.Reply{Now: now}, nil
}

// ListNodes implements engine.Store: one SELECT.
func (s *Store) ListNodes(ctx context.Context) (engine.NodesReply, error) {
	st, err := s.readUnion(ctx, unionParts{nodes: true})
	if err != nil {
		return engine.NodesReply{}, s.wrap("list_nodes", err)
	}
	return engine.NodesReply{Reply: engine.Reply{Now: st.now}, Nodes: st.nodes}, nil
}

func sortNodes(ns []engine.NodeInfo) {
	slices.SortFunc(ns, func(a, b engine.NodeInfo) int { return strings.Compare(a.ID, b.ID) })
}
