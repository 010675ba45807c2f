// Package memstore is the in-memory reference implementation of engine.Store.
//
// It implements the contract of engine/store.go exactly and is what the simulator, the
// engine's own tests and `helix dev` run against. Store time comes only from the function
// handed to New (virtual time in the simulator, the wall clock in dev mode); nothing here
// reads the clock itself, starts a goroutine or draws randomness, and every map is
// iterated in sorted order, so the same calls at the same store times give the same
// replies. A mutex makes it safe for concurrent use (production dev mode calls it from
// several goroutines); every call is one critical section, which is what "one
// transaction" means here.
//
// Besides the contract, the store offers what the simulator's checker needs and a real
// database cannot give cheaply: Snapshot (a consistent copy of every table) and Stats (how
// many successful writes each operation made, so a test can assert that a steady-state
// cluster writes nothing but heartbeats and lease renewals).
package memstore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/helixcoord/helix/engine"
)

// Store is an in-memory engine.Store. The zero value is not usable; call New.
type Store struct {
	mu  sync.Mutex
	now func() time.Time

	leases    map[string]*engine.Lease
	nodes     map[string]*node
	taskLists map[tlKey]int // partition count
	rows      map[engine.PartitionID]*engine.Assignment
	// owned indexes rows by owner id (any incarnation), so a heartbeat that must return a
	// node's assignments does not scan every row.
	owned map[string]map[engine.PartitionID]struct{}
	// incoming indexes the rows on their way to a node (see incomingTo) by that node, so
	// a heartbeat that must say what is coming to a node does not scan every row either.
	incoming map[string]map[engine.PartitionID]struct{}

	// revision is the store-wide assignment revision: it grows by one for every row
	// change. revLog[r-1] is the partition whose change got revision r, so an incremental
	// read touches only the rows changed since the caller's revision.
	revision uint64
	revLog   []engine.PartitionID

	writes map[string]int // successful writes by op name
	calls  map[string]int // every call by op name, including refused ones
}

type tlKey struct{ domain, name string }

type node struct {
	info engine.NodeInfo // HeartbeatAge is computed on the way out
	// assignRev is the node's assignment revision: +1 at every registration and at every
	// write call that changes a row the node owns or owned before the call (any of its
	// incarnations), or a row on its way to it (incomingTo) before or after the call. A
	// heartbeat whose known value differs gets the node's rows and incoming partitions.
	assignRev uint64
}

// New returns an empty store whose clock is now. now must be safe to call under the
// store's lock (it must not call back into the store).
func New(now func() time.Time) *Store {
	if now == nil {
		panic("memstore.New: now must not be nil")
	}
	return &Store{
		now:       now,
		leases:    map[string]*engine.Lease{},
		nodes:     map[string]*node{},
		taskLists: map[tlKey]int{},
		rows:      map[engine.PartitionID]*engine.Assignment{},
		owned:     map[string]map[engine.PartitionID]struct{}{},
		incoming:  map[string]map[engine.PartitionID]struct{}{},
		writes:    map[string]int{},
		calls:     map[string]int{},
	}
}

var _ engine.Store = (*Store)(nil)

// Op names used in Stats for calls that have no engine.Op.
const (
	opPutTaskList    = "put_tasklist"
	opDeleteTaskList = "delete_tasklist"
	opListTaskLists  = "list_tasklists"
)

// begin checks the context, takes the lock and counts the call. The caller must unlock.
func (s *Store) begin(ctx context.Context, op string) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, fmt.Errorf("memstore: %s: %w (%w)", op, engine.ErrUnavailable, err)
	}
	s.mu.Lock()
	s.calls[op]++
	return s.now(), nil
}

func errf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("memstore: "+format+": %w", append(args, sentinel)...)
}

// ---- leases ----

// AcquireLease implements engine.Store.
func (s *Store) AcquireLease(ctx context.Context, key, owner string, ttl time.Duration) (engine.LeaseReply, error) {
	if err := engine.ValidateAcquire(key, owner, ttl); err != nil {
		return engine.LeaseReply{}, err
	}
	now, err := s.begin(ctx, "acquire")
	if err != nil {
		return engine.LeaseReply{}, err
	}
	defer s.mu.Unlock()
	l := s.leases[key]
	switch {
	case l == nil:
		l = &engine.Lease{Key: key}
		s.leases[key] = l
		l.Epoch = 1
	case l.HeldAt(now) && l.Owner == owner:
		// Renewal by the holder: the epoch is the fencing token of one tenure, so it
		// does not change while ownership does not.
	case l.HeldAt(now):
		return engine.LeaseReply{}, &engine.LeaseHeldError{Key: key, Holder: l.Owner, Epoch: l.Epoch, ExpiresAt: l.ExpiresAt, Now: now}
	default:
		// Free, released, deletable or expired: a new tenure, even for the previous
		// owner (its own timer already counted the old tenure as lost).
		l.Epoch++
	}
	l.Owner = owner
	l.Status = engine.LeaseActive
	l.ExpiresAt = now.Add(ttl)
	s.writes["acquire"]++
	return engine.LeaseReply{Reply: engine.Reply{Now: now}, Lease: *l}, nil
}

// RenewLease implements engine.Store.
func (s *Store) RenewLease(ctx context.Context, key, owner string, epoch uint64, ttl time.Duration) (engine.LeaseReply, error) {
	if err := engine.ValidateRenew(key, owner, epoch, ttl); err != nil {
		return engine.LeaseReply{}, err
	}
	now, err := s.begin(ctx, "renew")
	if err != nil {
		return engine.LeaseReply{}, err
	}
	defer s.mu.Unlock()
	l := s.leases[key]
	if l == nil || l.Status != engine.LeaseActive || l.Owner != owner || l.Epoch != epoch {
		return engine.LeaseReply{}, errf(engine.ErrLeaseLost, "renew lease %q by %q at epoch %d", key, owner, epoch)
	}
	expired := !now.Before(l.ExpiresAt)
	if expired {
		return engine.LeaseReply{}, errf(engine.ErrLeaseLost, "renew lease %q by %q at epoch %d: expired %v ago", key, owner, epoch, now.Sub(l.ExpiresAt))
	}
	l.ExpiresAt = now.Add(ttl)
	s.writes["renew"]++
	return engine.LeaseReply{Reply: engine.Reply{Now: now}, Lease: *l}, nil
}

// ReleaseLease implements engine.Store. A released lease has no owner, status inactive
// and ExpiresAt = the release time; its epoch is kept.
func (s *Store) ReleaseLease(ctx context.Context, key, owner string, epoch uint64) (engine.LeaseReply, error) {
	if err := engine.ValidateRelease(key, owner, epoch); err != nil {
		return engine.LeaseReply{}, err
	}
	now, err := s.begin(ctx, "release")
	if err != nil {
		return engine.LeaseReply{}, err
	}
	defer s.mu.Unlock()
	l := s.leases[key]
	if l == nil || !l.HeldAt(now) || l.Owner != owner || l.Epoch != epoch {
		return engine.LeaseReply{}, errf(engine.ErrLeaseLost, "release lease %q by %q at epoch %d", key, owner, epoch)
	}
	l.Owner = ""
	l.Status = engine.LeaseInactive
	l.ExpiresAt = now
	s.writes["release"]++
	return engine.LeaseReply{Reply: engine.Reply{Now: now}, Lease: *l}, nil
}

// ReadLease implements engine.Store.
func (s *Store) ReadLease(ctx context.Context, key string) (engine.LeaseReply, error) {
	if err := engine.ValidateName("lease.key", key); err != nil {
		return engine.LeaseReply{}, err
	}
	now, err := s.begin(ctx, "read_lease")
	if err != nil {
		return engine.LeaseReply{}, err
	}
	defer s.mu.Unlock()
	l := s.leases[key]
	if l == nil {
		return engine.LeaseReply{}, errf(engine.ErrNotFound, "lease %q", key)
	}
	return engine.LeaseReply{Reply: engine.Reply{Now: now}, Lease: *l}, nil
}

// SetLeaseStatus is an operator's tool for the lease table: mark a lease deletable
// (retired; the next acquirer gets epoch+1) or raise its epoch to at least minEpoch (after
// a failover to a replica that lost the last grants). It is not part of engine.Store; the
// simulator uses it to model operator actions. ErrNotFound if the lease never existed.
func (s *Store) SetLeaseStatus(key string, status engine.LeaseStatus, minEpoch uint64) error {
	if status != engine.LeaseInactive && status != engine.LeaseDeletable {
		return engine.Invalid("lease.status", fmt.Sprint(uint8(status)), "must be inactive (0) or deletable (2): only an acquirer makes a lease active")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.leases[key]
	if l == nil {
		return errf(engine.ErrNotFound, "lease %q", key)
	}
	l.Owner = ""
	l.Status = status
	if l.Epoch < minEpoch {
		l.Epoch = minEpoch
	}
	s.writes["set_lease_status"]++
	return nil
}

// ---- nodes ----

// RegisterNode implements engine.Store. The new incarnation is the previous one + 1
// (1 for a new id).
func (s *Store) RegisterNode(ctx context.Context, spec engine.NodeSpec) (engine.RegisterReply, error) {
	if err := engine.ValidateNodeSpec(spec); err != nil {
		return engine.RegisterReply{}, err
	}
	now, err := s.begin(ctx, "register")
	if err != nil {
		return engine.RegisterReply{}, err
	}
	defer s.mu.Unlock()
	n := s.nodes[spec.ID]
	if n != nil {
		if held := engine.RegistrationHeld(spec, n.info, now); held != nil {
			if held.Pending && n.info.ReplaceBy != held.By {
				// A takeover starts: from now on the holder's heartbeats are refused.
				n.info.ReplaceBy = held.By
				s.writes["register"]++
			}
			return engine.RegisterReply{}, held
		}
	}
	if n == nil {
		n = &node{}
		s.nodes[spec.ID] = n
	}
	n.info = engine.NodeInfo{
		ID:            spec.ID,
		Incarnation:   n.info.Incarnation + 1,
		Capacity:      spec.Capacity,
		Labels:        cloneLabels(spec.Labels),
		Status:        engine.NodeAlive,
		LastHeartbeat: now,
		Process:       spec.Process,
		Host:          spec.Host,
		PID:           spec.PID,
	}
	// A new incarnation owns nothing yet; bumping makes its first heartbeat (whatever it
	// passes as known) get its definitive, empty, list.
	n.assignRev++
	s.writes["register"]++
	return engine.RegisterReply{Reply: engine.Reply{Now: now}, Incarnation: n.info.Incarnation}, nil
}

// Heartbeat implements engine.Store.
func (s *Store) Heartbeat(ctx context.Context, id string, incarnation uint64, known uint64) (engine.HeartbeatReply, error) {
	if err := engine.ValidateNodeIncarnation(id, incarnation); err != nil {
		return engine.HeartbeatReply{}, err
	}
	now, err := s.begin(ctx, "heartbeat")
	if err != nil {
		return engine.HeartbeatReply{}, err
	}
	defer s.mu.Unlock()
	n := s.nodes[id]
	if n == nil {
		return engine.HeartbeatReply{}, errf(engine.ErrNodeDead, "heartbeat %s/%d: node unknown", id, incarnation)
	}
	if n.info.Incarnation != incarnation {
		return engine.HeartbeatReply{}, errf(engine.ErrNodeDead, "heartbeat %s/%d: replaced by incarnation %d", id, incarnation, n.info.Incarnation)
	}
	if n.info.Status == engine.NodeDead {
		return engine.HeartbeatReply{}, errf(engine.ErrNodeDead, "heartbeat %s/%d: declared dead", id, incarnation)
	}
	if n.info.ReplaceBy.Process != "" {
		return engine.HeartbeatReply{}, errf(engine.ErrNodeDead, "heartbeat %s/%d: being replaced by process %s", id, incarnation, n.info.ReplaceBy.Process)
	}
	n.info.LastHeartbeat = now
	s.writes["heartbeat"]++
	r := engine.HeartbeatReply{Reply: engine.Reply{Now: now}, AssignRevision: n.assignRev}
	if known != n.assignRev {
		r.Changed = true
		r.Assignments = s.assignmentsOf(id, incarnation)
		r.Incoming = s.incomingOf(id)
		r.Draining = n.info.Draining
	}
	return r, nil
}

// incomingOf returns the partitions on their way to id (incomingTo), sorted.
func (s *Store) incomingOf(id string) []engine.PartitionID {
	var out []engine.PartitionID
	for p := range s.incoming[id] {
		out = append(out, p)
	}
	slices.SortFunc(out, engine.ComparePartitions)
	return out
}

// assignmentsOf returns the Assigned and Releasing rows of one incarnation, sorted.
func (s *Store) assignmentsOf(id string, incarnation uint64) []engine.Assignment {
	var out []engine.Assignment
	for p := range s.owned[id] {
		r := s.rows[p]
		if r.Incarnation == incarnation && (r.State == engine.Assigned || r.State == engine.Releasing) {
			out = append(out, *r)
		}
	}
	sortRows(out)
	return out
}

// DeregisterNode implements engine.Store. Deregistering an incarnation that is already
// dead or replaced succeeds and changes nothing, so a retried deregistration is safe.
// ErrNotFound if the id is unknown or the incarnation was never issued.
func (s *Store) DeregisterNode(ctx context.Context, id string, incarnation uint64) (engine.Reply, error) {
	if err := engine.ValidateNodeIncarnation(id, incarnation); err != nil {
		return engine.Reply{}, err
	}
	now, err := s.begin(ctx, "deregister")
	if err != nil {
		return engine.Reply{}, err
	}
	defer s.mu.Unlock()
	n := s.nodes[id]
	if n == nil || incarnation > n.info.Incarnation {
		return engine.Reply{}, errf(engine.ErrNotFound, "deregister %s/%d", id, incarnation)
	}
	if incarnation == n.info.Incarnation && n.info.Status == engine.NodeAlive {
		n.info.Status = engine.NodeDead
		s.writes["deregister"]++
	}
	return engine.Reply{Now: now}, nil
}

// UpdateNode implements engine.Store. It applies to the node's row whatever its status.
// ErrNotFound if the id is unknown.
func (s *Store) UpdateNode(ctx context.Context, id string, u engine.NodeUpdate) (engine.Reply, error) {
	if err := engine.ValidateNodeUpdate(id, u); err != nil {
		return engine.Reply{}, err
	}
	now, err := s.begin(ctx, "update_node")
	if err != nil {
		return engine.Reply{}, err
	}
	defer s.mu.Unlock()
	n := s.nodes[id]
	if n == nil {
		return engine.Reply{}, errf(engine.ErrNotFound, "update node %s", id)
	}
	if u.Incarnation != 0 && (n.info.Incarnation != u.Incarnation || n.info.Status != engine.NodeAlive) {
		return engine.Reply{}, errf(engine.ErrNodeDead, "update node %s/%d: current incarnation is %d (%s)", id, u.Incarnation, n.info.Incarnation, n.info.Status)
	}
	if u.Draining != nil {
		if n.info.Draining != *u.Draining {
			n.assignRev++ // the node's next heartbeat reports the flag (HeartbeatReply.Draining)
		}
		n.info.Draining = *u.Draining
	}
	if u.Capacity != nil {
		n.info.Capacity = *u.Capacity
	}
	if u.Labels != nil {
		n.info.Labels = cloneLabels(*u.Labels)
	}
	s.writes["update_node"]++
	return engine.Reply{Now: now}, nil
}

// ListNodes implements engine.Store.
func (s *Store) ListNodes(ctx context.Context) (engine.NodesReply, error) {
	now, err := s.begin(ctx, "list_nodes")
	if err != nil {
		return engine.NodesReply{}, err
	}
	defer s.mu.Unlock()
	return engine.NodesReply{Reply: engine.Reply{Now: now}, Nodes: s.nodeList(now)}, nil
}

func (s *Store) nodeList(now time.Time) []engine.NodeInfo {
	ids := sortedKeys(s.nodes)
	out := make([]engine.NodeInfo, 0, len(ids))
	for _, id := range ids {
		ni := s.nodes[id].info
		ni.Labels = cloneLabels(ni.Labels)
		ni.HeartbeatAge = now.Sub(ni.LastHeartbeat)
		out = append(out, ni)
	}
	return out
}

// live reports whether (id, incarnation) is the node's current incarnation and alive,
// counting the nodes a batch being applied declares dead.
func (s *Store) live(id string, incarnation uint64, dying map[string]bool) bool {
	n := s.nodes[id]
	return n != nil && n.info.Incarnation == incarnation && n.info.Status == engine.NodeAlive && !dying[id]
}

// ---- task lists ----

// PutTaskList implements engine.Store. New rows get revisions in partition order.
func (s *Store) PutTaskList(ctx context.Context, tl engine.TaskList) (engine.Reply, error) {
	if err := engine.ValidateTaskList(tl); err != nil {
		return engine.Reply{}, err
	}
	now, err := s.begin(ctx, opPutTaskList)
	if err != nil {
		return engine.Reply{}, err
	}
	defer s.mu.Unlock()
	s.taskLists[tlKey{tl.Domain, tl.Name}] = tl.Partitions
	for i := 0; i < tl.Partitions; i++ {
		p := engine.PartitionID{Domain: tl.Domain, TaskList: tl.Name, Partition: i}
		r := s.rows[p]
		switch {
		case r == nil:
			s.rows[p] = &engine.Assignment{Partition: p, State: engine.Unassigned, Revision: s.bump(p)}
		case r.State == engine.Deleted:
			// Revive the tombstone: the generation (and the epoch of its last fenced
			// write) are kept, so generations never repeat.
			r.State = engine.Unassigned
			r.Target = ""
			r.Revision = s.bump(p)
		}
	}
	s.writes[opPutTaskList]++
	return engine.Reply{Now: now}, nil
}

// DeleteTaskList implements engine.Store.
func (s *Store) DeleteTaskList(ctx context.Context, domain, name string) (engine.Reply, error) {
	if err := engine.ValidateTaskListName(domain, name); err != nil {
		return engine.Reply{}, err
	}
	now, err := s.begin(ctx, opDeleteTaskList)
	if err != nil {
		return engine.Reply{}, err
	}
	defer s.mu.Unlock()
	k := tlKey{domain, name}
	if _, ok := s.taskLists[k]; !ok {
		return engine.Reply{}, errf(engine.ErrNotFound, "task list %s/%s", domain, name)
	}
	delete(s.taskLists, k)
	s.writes[opDeleteTaskList]++
	return engine.Reply{Now: now}, nil
}

// ListTaskLists implements engine.Store.
func (s *Store) ListTaskLists(ctx context.Context) (engine.TaskListsReply, error) {
	now, err := s.begin(ctx, opListTaskLists)
	if err != nil {
		return engine.TaskListsReply{}, err
	}
	defer s.mu.Unlock()
	return engine.TaskListsReply{Reply: engine.Reply{Now: now}, TaskLists: s.taskListList()}, nil
}

func (s *Store) taskListList() []engine.TaskList {
	out := make([]engine.TaskList, 0, len(s.taskLists))
	for k, n := range s.taskLists {
		out = append(out, engine.TaskList{Domain: k.domain, Name: k.name, Partitions: n})
	}
	slices.SortFunc(out, func(a, b engine.TaskList) int {
		if c := strings.Compare(a.Domain, b.Domain); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

func (s *Store) configured(p engine.PartitionID) bool {
	n, ok := s.taskLists[tlKey{p.Domain, p.TaskList}]
	return ok && p.Partition < n
}

// ---- assignments ----

// bump allocates the next store revision for a change to p's row.
func (s *Store) bump(p engine.PartitionID) uint64 {
	s.revision++
	s.revLog = append(s.revLog, p)
	return s.revision
}

// rowsSince returns copies of the rows with Revision > since, sorted by partition.
func (s *Store) rowsSince(since uint64) []engine.Assignment {
	var out []engine.Assignment
	if since == 0 || since > s.revision {
		// since > revision cannot come from this store; answer with everything rather
		// than nothing, so a confused caller resynchronises.
		out = make([]engine.Assignment, 0, len(s.rows))
		for _, r := range s.rows {
			out = append(out, *r)
		}
	} else {
		// Each revision belongs to one row change; the row is returned only if that
		// change is still its latest.
		for i := since; i < s.revision; i++ {
			r := s.rows[s.revLog[i]]
			if r.Revision == i+1 {
				out = append(out, *r)
			}
		}
	}
	sortRows(out)
	return out
}

// ReadState implements engine.Store.
func (s *Store) ReadState(ctx context.Context, since uint64) (engine.StateReply, error) {
	now, err := s.begin(ctx, "read_state")
	if err != nil {
		return engine.StateReply{}, err
	}
	defer s.mu.Unlock()
	return engine.StateReply{
		Reply:       engine.Reply{Now: now},
		Nodes:       s.nodeList(now),
		TaskLists:   s.taskListList(),
		Revision:    s.revision,
		Assignments: s.rowsSince(since),
	}, nil
}

// ReadAssignments implements engine.Store.
func (s *Store) ReadAssignments(ctx context.Context, since uint64) (engine.AssignmentsReply, error) {
	now, err := s.begin(ctx, "read_assignments")
	if err != nil {
		return engine.AssignmentsReply{}, err
	}
	defer s.mu.Unlock()
	return engine.AssignmentsReply{Reply: engine.Reply{Now: now}, Revision: s.revision, Assignments: s.rowsSince(since)}, nil
}

// Apply implements engine.Store. Checks run in this order, and the first failure is
// returned with nothing written: the fence (ErrFenced), every changed row's recorded
// epoch (ErrFenced), the dead nodes (ErrConflict), each change's revision and
// precondition (ErrConflict).
func (s *Store) Apply(ctx context.Context, b engine.Batch) (engine.ApplyReply, error) {
	if err := engine.ValidateBatch(b); err != nil {
		return engine.ApplyReply{}, err
	}
	now, err := s.begin(ctx, "apply")
	if err != nil {
		return engine.ApplyReply{}, err
	}
	defer s.mu.Unlock()

	// The fence: the batch's epoch must be the current, unexpired epoch of the lease.
	// Who holds it does not matter: the epoch alone identifies the tenure.
	l := s.leases[b.Fence.Key]
	fenced := l == nil || l.Status != engine.LeaseActive || l.Epoch != b.Fence.Epoch || !now.Before(l.ExpiresAt)
	if fenced {
		return engine.ApplyReply{}, errf(engine.ErrFenced, "apply fenced by %s@%d", b.Fence.Key, b.Fence.Epoch)
	}
	// A row written by a later tenure must not be overwritten by an earlier one, even if
	// the lease table was reset (failover to a replica that lost the last grants).
	for _, c := range b.Changes {
		if r := s.rows[c.Partition]; r != nil && r.Epoch > b.Fence.Epoch {
			return engine.ApplyReply{}, errf(engine.ErrFenced, "apply at epoch %d: %s was written at epoch %d", b.Fence.Epoch, c.Partition, r.Epoch)
		}
	}

	dying := map[string]bool{}
	for _, d := range b.Dead {
		n := s.nodes[d.ID]
		switch {
		case n == nil || d.Incarnation > n.info.Incarnation:
			return engine.ApplyReply{}, errf(engine.ErrConflict, "declare %s/%d dead: no such incarnation", d.ID, d.Incarnation)
		case d.Incarnation < n.info.Incarnation || n.info.Status == engine.NodeDead:
			// Already dead (replaced, deregistered or declared): nothing to do, so that
			// a retried batch succeeds.
		case now.Sub(n.info.LastHeartbeat) <= b.DeadAfter:
			return engine.ApplyReply{}, errf(engine.ErrConflict, "declare %s/%d dead: heartbeat %v old, not older than %v", d.ID, d.Incarnation, now.Sub(n.info.LastHeartbeat), b.DeadAfter)
		default:
			dying[d.ID] = true
		}
	}

	next := make([]engine.Assignment, len(b.Changes))
	for i, c := range b.Changes {
		r := s.rows[c.Partition]
		if r == nil {
			return engine.ApplyReply{}, errf(engine.ErrConflict, "%s %s: no such row", c.Kind, c.Partition)
		}
		if r.Revision != c.Revision {
			return engine.ApplyReply{}, errf(engine.ErrConflict, "%s %s: row is at revision %d, not %d", c.Kind, c.Partition, r.Revision, c.Revision)
		}
		ownerLive := (r.State == engine.Assigned || r.State == engine.Releasing) && s.live(r.Owner, r.Incarnation, dying)
		n := *r
		n.Epoch = b.Fence.Epoch
		switch c.Kind {
		case engine.ChangeAssign:
			if !(r.State == engine.Unassigned || ((r.State == engine.Assigned || r.State == engine.Releasing) && !ownerLive)) {
				return engine.ApplyReply{}, errf(engine.ErrConflict, "assign %s: row is %s by %s/%d", c.Partition, r.State, r.Owner, r.Incarnation)
			}
			if !s.configured(c.Partition) {
				return engine.ApplyReply{}, errf(engine.ErrConflict, "assign %s: partition is not configured", c.Partition)
			}
			if !s.live(c.Owner, c.Incarnation, dying) {
				return engine.ApplyReply{}, errf(engine.ErrConflict, "assign %s: %s/%d is not a live incarnation", c.Partition, c.Owner, c.Incarnation)
			}
			n.State, n.Owner, n.Incarnation, n.Generation, n.Target = engine.Assigned, c.Owner, c.Incarnation, r.Generation+1, ""
		case engine.ChangeRelease:
			if r.State != engine.Assigned || !ownerLive {
				return engine.ApplyReply{}, errf(engine.ErrConflict, "release %s: row is %s by %s/%d (live %v)", c.Partition, r.State, r.Owner, r.Incarnation, ownerLive)
			}
			n.State, n.Target = engine.Releasing, c.Target
		case engine.ChangeUnassign:
			if !((r.State == engine.Assigned || r.State == engine.Releasing) && !ownerLive) {
				return engine.ApplyReply{}, errf(engine.ErrConflict, "unassign %s: row is %s by %s/%d (live %v)", c.Partition, r.State, r.Owner, r.Incarnation, ownerLive)
			}
			// Target is kept as the allocator's hint, as after an acknowledged release.
			n.State, n.Owner, n.Incarnation = engine.Unassigned, "", 0
		case engine.ChangeDelete:
			if r.State == engine.Deleted || ownerLive {
				return engine.ApplyReply{}, errf(engine.ErrConflict, "delete %s: row is %s by %s/%d (live %v)", c.Partition, r.State, r.Owner, r.Incarnation, ownerLive)
			}
			if s.configured(c.Partition) {
				return engine.ApplyReply{}, errf(engine.ErrConflict, "delete %s: partition is still configured", c.Partition)
			}
			n.State, n.Owner, n.Incarnation, n.Target = engine.Deleted, "", 0, ""
		}
		next[i] = n
	}

	// Every check passed: write.
	for _, id := range sortedKeys(dying) {
		s.nodes[id].info.Status = engine.NodeDead
	}
	touched := map[string]bool{}
	for i := range next {
		n := next[i]
		old := s.rows[n.Partition]
		// Old and new owners, and the node the row was or is on its way to: each learns
		// of the change with its next heartbeat.
		for _, id := range []string{old.Owner, n.Owner, old.IncomingTo(), n.IncomingTo()} {
			if id != "" {
				touched[id] = true
			}
		}
		s.setOwner(n.Partition, old.Owner, n.Owner)
		s.setIncoming(n.Partition, old.IncomingTo(), n.IncomingTo())
		n.Revision = s.bump(n.Partition)
		*old = n
	}
	s.bumpNodes(touched)
	s.writes["apply"]++
	return engine.ApplyReply{Reply: engine.Reply{Now: now}, Revision: s.revision}, nil
}

// setOwner keeps the owner index in step with a row's owner.
func (s *Store) setOwner(p engine.PartitionID, from, to string) { reindex(s.owned, p, from, to) }

// setIncoming keeps the incoming index in step with a row's incomingTo.
func (s *Store) setIncoming(p engine.PartitionID, from, to string) { reindex(s.incoming, p, from, to) }

// reindex moves p from key from to key to of an index by node id ("" is no key).
func reindex(idx map[string]map[engine.PartitionID]struct{}, p engine.PartitionID, from, to string) {
	if from == to {
		return
	}
	if from != "" {
		delete(idx[from], p)
		if len(idx[from]) == 0 {
			delete(idx, from)
		}
	}
	if to != "" {
		if idx[to] == nil {
			idx[to] = map[engine.PartitionID]struct{}{}
		}
		idx[to][p] = struct{}{}
	}
}

// bumpNodes raises the assignment revision of every node whose rows a write changed,
// once per write.
func (s *Store) bumpNodes(ids map[string]bool) {
	for _, id := range sortedKeys(ids) {
		if n := s.nodes[id]; n != nil {
			n.assignRev++
		}
	}
}

// AckRelease implements engine.Store. ErrNodeDead (unknown id, replaced, or dead
// incarnation) is checked first; ErrNotFound if the partition has no row.
func (s *Store) AckRelease(ctx context.Context, a engine.Ack) (engine.Reply, error) {
	if err := engine.ValidateAck(a); err != nil {
		return engine.Reply{}, err
	}
	now, err := s.begin(ctx, "ack_release")
	if err != nil {
		return engine.Reply{}, err
	}
	defer s.mu.Unlock()
	if !s.live(a.Node, a.Incarnation, nil) {
		return engine.Reply{}, errf(engine.ErrNodeDead, "ack %s by %s/%d", a.Partition, a.Node, a.Incarnation)
	}
	r := s.rows[a.Partition]
	if r == nil {
		return engine.Reply{}, errf(engine.ErrNotFound, "ack %s: no such row", a.Partition)
	}
	if r.State != engine.Releasing || r.Owner != a.Node || r.Incarnation != a.Incarnation || r.Generation != a.Generation {
		return engine.Reply{}, errf(engine.ErrConflict, "ack %s by %s/%d at generation %d: row is %s by %s/%d at generation %d",
			a.Partition, a.Node, a.Incarnation, a.Generation, r.State, r.Owner, r.Incarnation, r.Generation)
	}
	// The acknowledging owner loses the row; its target learns that the release was
	// acknowledged (the row stays on its way to it until the coordinator assigns it).
	touched := map[string]bool{a.Node: true}
	if to := r.IncomingTo(); to != "" {
		touched[to] = true
	}
	s.setOwner(r.Partition, r.Owner, "")
	r.State, r.Owner, r.Incarnation = engine.Unassigned, "", 0
	r.Revision = s.bump(r.Partition)
	s.bumpNodes(touched)
	s.writes["ack_release"]++
	return engine.Reply{Now: now}, nil
}

// GiveBack implements engine.Store: the owner hands back an Assigned row whose handler
// keeps failing on it. Same error order as AckRelease.
func (s *Store) GiveBack(ctx context.Context, g engine.Ack) (engine.Reply, error) {
	if err := engine.ValidateGiveBack(g); err != nil {
		return engine.Reply{}, err
	}
	now, err := s.begin(ctx, "give_back")
	if err != nil {
		return engine.Reply{}, err
	}
	defer s.mu.Unlock()
	if !s.live(g.Node, g.Incarnation, nil) {
		return engine.Reply{}, errf(engine.ErrNodeDead, "give back %s by %s/%d", g.Partition, g.Node, g.Incarnation)
	}
	r := s.rows[g.Partition]
	if r == nil {
		return engine.Reply{}, errf(engine.ErrNotFound, "give back %s: no such row", g.Partition)
	}
	if r.State != engine.Assigned || r.Owner != g.Node || r.Incarnation != g.Incarnation || r.Generation != g.Generation {
		return engine.Reply{}, errf(engine.ErrConflict, "give back %s by %s/%d at generation %d: row is %s by %s/%d at generation %d",
			g.Partition, g.Node, g.Incarnation, g.Generation, r.State, r.Owner, r.Incarnation, r.Generation)
	}
	s.setOwner(r.Partition, r.Owner, "")
	r.State, r.Owner, r.Incarnation, r.Target = engine.Unassigned, "", 0, ""
	r.GivenBackBy, r.GivenBackAt = g.Node, now
	r.Revision = s.bump(r.Partition)
	s.bumpNodes(map[string]bool{g.Node: true})
	s.writes["give_back"]++
	return engine.Reply{Now: now}, nil
}

// ---- inspection, for tests and the simulator's checker ----

// Snapshot is a consistent copy of every table, each sorted (leases by key, nodes by id,
// task lists by domain and name, rows by partition).
type Snapshot struct {
	Now         time.Time
	Revision    uint64
	Leases      []engine.Lease
	Nodes       []engine.NodeInfo
	TaskLists   []engine.TaskList
	Assignments []engine.Assignment
	// AssignRevisions is each node's assignment revision (what Heartbeat compares the
	// caller's known value with), by node id.
	AssignRevisions map[string]uint64
}

// Snapshot returns a copy of the whole store at store time now().
func (s *Store) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	snap := Snapshot{
		Now:             now,
		Revision:        s.revision,
		Nodes:           s.nodeList(now),
		TaskLists:       s.taskListList(),
		Assignments:     s.rowsSince(0),
		AssignRevisions: map[string]uint64{},
	}
	for _, k := range sortedKeys(s.leases) {
		snap.Leases = append(snap.Leases, *s.leases[k])
	}
	for id, n := range s.nodes {
		snap.AssignRevisions[id] = n.assignRev
	}
	return snap
}

// Stats returns how many successful writes each operation made, by op name (the names
// of engine.Op, plus put_tasklist, delete_tasklist and set_lease_status). A write is a
// call that changed or re-confirmed a row: a refused call, a read, or a deregistration
// of an incarnation already dead is not counted.
func (s *Store) Stats() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.writes))
	for k, v := range s.writes {
		out[k] = v
	}
	return out
}

// Calls returns how many calls each operation received, refused ones included (calls
// rejected by validation before reaching the store, and calls whose context was already
// done, are not counted).
func (s *Store) Calls() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.calls))
	for k, v := range s.calls {
		out[k] = v
	}
	return out
}

// ---- helpers ----

func cloneLabels(l []engine.Label) []engine.Label {
	if len(l) == 0 {
		return nil
	}
	return slices.Clone(l)
}

func sortRows(rows []engine.Assignment) {
	slices.SortFunc(rows, func(a, b engine.Assignment) int { return engine.ComparePartitions(a.Partition, b.Partition) })
}

func sortedKeys[K ~string, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
