package main

const (
	memstore    = "engine/memstore/memstore.go"
	coordinator = "engine/coordinator.go"
	worker      = "engine/worker.go"
	nodeGo      = "engine/node.go"
	alloc       = "engine/alloc.go"
)

// mutants is the list the harness runs. The first nine are the planted bugs the
// simulator's teeth tests used to switch on inside the engine (internal/flaw, deleted);
// the rest cover the store's boundaries, the worker's liveness arithmetic, sorting and
// the coordinator's lease window.
var mutants = []Mutant{
	// ---- the nine former flaws ----
	{
		Name: "StoreNoEpochCheck", Area: "store", Breaks: "the store applies a batch without checking its fence epoch (S2)",
		Patches: []Patch{
			{memstore, "\tif fenced {\n", "\tif fenced && false {\n"},
			{memstore, "r.Epoch > b.Fence.Epoch {", "r.Epoch > b.Fence.Epoch && false {"},
		},
	},
	{
		Name: "StoreAcceptOldIncarnation", Area: "store", Breaks: "the store accepts (and revives) a dead incarnation's heartbeat (S3)",
		Patches: []Patch{{memstore,
			"\tif n.info.Status == engine.NodeDead {\n\t\treturn engine.HeartbeatReply{}, errf(engine.ErrNodeDead, \"heartbeat %s/%d: declared dead\", id, incarnation)\n\t}\n",
			"\tn.info.Status = engine.NodeAlive\n"}},
	},
	{
		Name: "StoreRenewAfterExpiry", Area: "store", Breaks: "the store renews a lease that has expired (S1)",
		Patches: []Patch{{memstore, "\tif expired {\n", "\tif expired && false {\n"}},
	},
	{
		Name: "NodeNoSelfFence", Area: "worker", Breaks: "a worker keeps its partitions, and publishes no deadline, when its liveness runs out (S3)",
		Patches: []Patch{
			{worker, "if !w.fenced && !n.now.Before(w.livenessUntil) {", "if false && !w.fenced && !n.now.Before(w.livenessUntil) {"},
			{worker, "\tif !w.fenced {\n\t\tadd(w.livenessUntil)", "\tif false {\n\t\tadd(w.livenessUntil)"},
			{nodeGo, "\t\ts.Owned = append(s.Owned, OwnedPartition{Partition: p, Generation: n.w.owned[p]})\n\t}\n",
				"\t\ts.Owned = append(s.Owned, OwnedPartition{Partition: p, Generation: n.w.owned[p]})\n\t}\n\tif len(s.Owned) > 0 {\n\t\ts.LivenessUntil = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)\n\t}\n"},
		},
	},
	{
		Name: "NodeLeaseFromReply", Area: "coordinator", Breaks: "a holder counts its lease from the reply, not the send (S1)",
		Patches: []Patch{{coordinator, "return n.window(p.sent, n.cfg.LeaseTTL)", "return n.window(n.now, n.cfg.LeaseTTL)"}},
	},
	{
		Name: "NodeAssignBeforeAck", Area: "coordinator", Breaks: "the coordinator (and the store) re-assign a releasing partition before the owner acknowledges (S3)",
		Patches: []Patch{
			{coordinator, "\t\t\tput(i, Change{Kind: ChangeUnassign, Partition: a.Partition, Revision: a.Revision})\n\t\t}\n",
				"\t\t\tput(i, Change{Kind: ChangeUnassign, Partition: a.Partition, Revision: a.Revision})\n\t\tcase a.State == Releasing:\n\t\t\tif nd, ok := alive[a.Target]; ok && a.Target != a.Owner {\n\t\t\t\tput(i, Change{Kind: ChangeAssign, Partition: a.Partition, Revision: a.Revision, Owner: a.Target, Incarnation: nd.Incarnation})\n\t\t\t}\n\t\t}\n"},
			{memstore, "if !(r.State == engine.Unassigned || ((r.State", "if !(r.State == engine.Unassigned || r.State == engine.Releasing || ((r.State"},
		},
	},
	{
		Name: "NodeIgnoreDrain", Area: "coordinator", Breaks: "the coordinator keeps assigning to draining workers (L3)",
		Patches: []Patch{{coordinator, "Capacity: max(nd.Capacity, 1), Draining: nd.Draining}", "Capacity: max(nd.Capacity, 1), Draining: false}"}},
	},
	{
		Name: "AllocUnsortedTieBreak", Area: "allocator", Breaks: "the allocator breaks ties in input order, not by id (determinism)",
		Patches: []Patch{
			{alloc, "rank := int32(i)", "_, rank := at(i)"},
			{alloc, "\tif len(caps) == 1 {\n\t\ta.classes[0].members = order", "\tslices.SortFunc(order, a.byRank)\n\tif len(caps) == 1 {\n\t\ta.classes[0].members = order"},
		},
	},
	{
		Name: "NodeNoStepDownOnFence", Area: "coordinator", Breaks: "the coordinator keeps believing it leads after ErrFenced (S1)",
		Patches: []Patch{{coordinator, "if isErr(err, ErrFenced) {", "if false && isErr(err, ErrFenced) {"}},
	},

	// ---- store boundaries ----
	{
		Name: "StoreFenceAtExpiryInstant", Area: "store", Breaks: "a fenced batch is accepted at the exact instant its lease expires (S2)",
		Patches: []Patch{{memstore, "l.Epoch != b.Fence.Epoch || !now.Before(l.ExpiresAt)", "l.Epoch != b.Fence.Epoch || now.After(l.ExpiresAt)"}},
	},
	{
		Name: "StoreRenewAtExpiryInstant", Area: "store", Breaks: "a lease is renewed at the exact instant it expires (S1)",
		Patches: []Patch{{memstore, "expired := !now.Before(l.ExpiresAt)", "expired := now.After(l.ExpiresAt)"}},
	},
	{
		Name: "StoreDeadAfterStrict", Area: "store", Breaks: "`<` for `<=`: a node is declared dead when its heartbeat is exactly dead_after old (S3)",
		Patches: []Patch{{memstore, "case now.Sub(n.info.LastHeartbeat) <= b.DeadAfter:", "case now.Sub(n.info.LastHeartbeat) < b.DeadAfter:"}},
	},
	{
		Name: "StoreDeadAfterUnchecked", Area: "store", Breaks: "the store declares a node dead without re-checking its heartbeat age (a heartbeat between read and write loses) (S3)",
		Patches: []Patch{{memstore, "case now.Sub(n.info.LastHeartbeat) <= b.DeadAfter:", "case false:"}},
	},
	{
		Name: "StoreRenewRaisesEpoch", Area: "store", Breaks: "a renewal raises the epoch (epoch rules)",
		Patches: []Patch{{memstore, "\tl.ExpiresAt = now.Add(ttl)\n\ts.writes[\"renew\"]++", "\tl.ExpiresAt = now.Add(ttl)\n\tl.Epoch++\n\ts.writes[\"renew\"]++"}},
	},
	{
		Name: "StoreNewHolderSameEpoch", Area: "store", Breaks: "a new tenure keeps the previous epoch (S1, epoch rules)",
		Patches: []Patch{{memstore, "owner (its own timer already counted the old tenure as lost).\n\t\tl.Epoch++", "owner (its own timer already counted the old tenure as lost)."}},
	},
	{
		Name: "StoreReacquireSameEpoch", Area: "store", Breaks: "the same node re-acquiring a lease it lost keeps the old epoch (epoch rules)",
		Patches: []Patch{{memstore, "owner (its own timer already counted the old tenure as lost).\n\t\tl.Epoch++", "owner (its own timer already counted the old tenure as lost).\n\t\tif l.Owner != owner {\n\t\t\tl.Epoch++\n\t\t}"}},
	},
	{
		Name: "StoreAckStaleGeneration", Area: "store", Breaks: "the store accepts a release acknowledgement for an older generation (S3)",
		Patches: []Patch{{memstore, "r.Incarnation != a.Incarnation || r.Generation != a.Generation {", "r.Incarnation != a.Incarnation {"}},
	},
	{
		Name: "StoreTombstoneResetsGeneration", Area: "store", Breaks: "a revived tombstone starts again at generation 0, so generations repeat (S3)",
		Patches: []Patch{{memstore, "\t\t\tr.State = engine.Unassigned\n\t\t\tr.Target = \"\"\n", "\t\t\tr.State = engine.Unassigned\n\t\t\tr.Target = \"\"\n\t\t\tr.Generation = 0\n"}},
	},
	{
		Name: "StoreTombstoneNotRevived", Area: "store", Breaks: "a task list grown back leaves its old tombstones deleted (S4)",
		Patches: []Patch{{memstore, "\t\tcase r.State == engine.Deleted:\n", "\t\tcase r.State == engine.Deleted && r.Generation == 0:\n"}},
	},
	{
		Name: "StoreDeletesConfigured", Area: "store", Breaks: "the store applies a stale delete to a partition that is configured again (S4)",
		Patches: []Patch{{memstore, "\t\t\tif s.configured(c.Partition) {\n\t\t\t\treturn engine.ApplyReply{}, errf(engine.ErrConflict, \"delete %s: partition is still configured\", c.Partition)\n\t\t\t}\n", ""}},
	},
	{
		Name: "StoreHeartbeatAnyIncarnation", Area: "store", Breaks: "the store accepts a heartbeat from a replaced incarnation (S3)",
		Patches: []Patch{{memstore, "\tif n.info.Incarnation != incarnation {\n\t\treturn engine.HeartbeatReply{}, errf(engine.ErrNodeDead, \"heartbeat %s/%d: replaced by incarnation %d\", id, incarnation, n.info.Incarnation)\n\t}\n", ""}},
	},
	{
		Name: "StoreApplyIgnoresRevision", Area: "store", Breaks: "the store applies a change planned from an older revision of the row (S3)",
		Patches: []Patch{{memstore, "if r.Revision != c.Revision {", "if false && r.Revision != c.Revision {"}},
	},

	// ---- the worker's liveness arithmetic ----
	{
		Name: "WorkerLivenessFromReply", Area: "worker", Breaks: "a worker counts its liveness from the heartbeat's reply, not its send (S3)",
		Patches: []Patch{{worker, "\t\tw.lastOK = p.sent\n\t\tw.livenessUntil = n.window(p.sent, n.cfg.DeadAfter)", "\t\tw.lastOK = p.sent\n\t\tw.livenessUntil = n.window(n.now, n.cfg.DeadAfter)"}},
	},
	{
		Name: "WorkerLivenessOnSend", Area: "worker", Breaks: "a worker extends its liveness when it sends a heartbeat, not when one succeeds (S3)",
		Patches: []Patch{{worker, "\t\tw.hbNext = n.now.Add(n.heartbeatInterval())\n", "\t\tw.hbNext = n.now.Add(n.heartbeatInterval())\n\t\tw.livenessUntil = n.window(n.now, n.cfg.DeadAfter)\n"}},
	},
	{
		Name: "NoDriftTerm", Area: "worker", Breaks: "the conservative windows (liveness and lease) leave out the drift term ρ·d (S3, S1)",
		Patches: []Patch{{nodeGo, "drift := time.Duration(math.Round(float64(d) * n.cfg.DriftRate))", "drift := time.Duration(math.Round(float64(d) * 0 * n.cfg.DriftRate))"}},
	},
	{
		Name: "WorkerAckWithoutStop", Area: "worker", Breaks: "a worker acknowledges a release without stopping the partition (S3)",
		Patches: []Patch{{worker, "\t\tcase r.State == Releasing:\n\t\t\tn.stopPartition(p, StopReleased)\n", "\t\tcase r.State == Releasing:\n"}},
	},

	// ---- sorting ----
	{
		Name: "NodesUnsorted", Area: "sorting", Breaks: "the coordinator keeps the store's node order: the dead list follows the reply (determinism)",
		Patches: []Patch{{coordinator, "c.nodes = slices.SortedStableFunc(slices.Values(r.Nodes), func(a, b NodeInfo) int { return strings.Compare(a.ID, b.ID) })", "c.nodes = r.Nodes"}},
	},
	{
		Name: "RowsUnsorted", Area: "sorting", Breaks: "the coordinator keeps a full read's rows in the store's order: its batches follow the reply (determinism)",
		Patches: []Patch{{coordinator, "if !slices.IsSortedFunc(c.rows, byPartition) { // the contract says sorted; be safe", "if false { // the contract says sorted; be safe"}},
	},
	{
		Name: "IncomingUnsorted", Area: "sorting", Breaks: "a worker keeps the store's order of incoming partitions (determinism)",
		Patches: []Patch{{worker, "\tslices.SortFunc(next, ComparePartitions) // a store (or a simulator) may not sort\n", ""}},
	},

	// ---- the coordinator ----
	{
		Name: "CoordWritesAfterLeaseWindow", Area: "coordinator", Breaks: "the coordinator plans and writes on a read answered after its own lease window (lease window)",
		Patches: []Patch{{coordinator, "\tif !n.now.Before(c.leaseUntil) {\n\t\treturn\n\t}\n\tn.planAndApply(changed)", "\tn.planAndApply(changed)"}},
	},
	{
		Name: "CoordUnassignsLiveOwner", Area: "coordinator", Breaks: "the coordinator unassigns rows whose owner is alive (L2, L4)",
		Patches: []Patch{{coordinator, "case (a.State == Assigned || a.State == Releasing) && !liveOwner(a):", "case a.State == Assigned || a.State == Releasing:"}},
	},
	{
		Name: "CoordIgnoresIncarnation", Area: "coordinator", Breaks: "the coordinator takes a row of a replaced incarnation as live (L2)",
		Patches: []Patch{{coordinator, "return ok && nd.Incarnation == a.Incarnation", "return ok && nd.Incarnation > 0"}},
	},
}
