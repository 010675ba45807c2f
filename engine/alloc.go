package engine

// PLACEHOLDER: the allocator's API is fixed here; the implementation below is a naive
// stand-in (assigns unowned partitions round-robin, never rebalances) until the real
// allocator lands.

// Worker is a live node as the allocator sees it.
type Worker struct {
	ID       string
	Capacity int  // weight ≥ 1
	Draining bool // keeps what it has until moved, gets nothing new
}

// PlanInput is everything the allocator looks at. Workers not listed are dead.
type PlanInput struct {
	TaskLists []TaskList
	Workers   []Worker
	// Current rows; only Partition, Owner, State and Target are read. Rows of partitions
	// that are not configured are ignored; a partition listed twice keeps the first row
	// in sorted order.
	Current []Assignment
	// MaxInFlight bounds partitions Releasing at once cluster-wide (0 = unlimited);
	// MaxInFlightPerWorker bounds those releasing from one worker.
	MaxInFlight          int
	MaxInFlightPerWorker int
}

// Placement is one partition's target owner ("" when no worker is eligible).
type Placement struct {
	Partition PartitionID
	Owner     string
}

// Move is a change of owner for one partition. From is the current owner ("" if none,
// or a dead owner's id).
type Move struct {
	Partition PartitionID
	From, To  string
}

// Plan is the allocator's answer.
type Plan struct {
	// Target: every configured partition exactly once, sorted, with its target owner.
	Target []Placement
	// Moves: every partition whose target owner differs from its current owner, sorted.
	Moves []Move
	// Assign: partitions with no live owner (unassigned, owner dead or absent) to assign
	// now. Not throttled: nobody is processing them.
	Assign []Move
	// Release: moves away from a live owner to start now (state → Releasing), within the
	// throttle. Partitions already Releasing are never in here.
	Release []Move
	// Reason is set when partitions are left without an owner (no eligible worker).
	Reason string
	// Spread is the cluster-wide spread: max − min over eligible workers of
	// (total partitions held ÷ capacity), scaled ×1000 to stay integral.
	Spread int
}

// PlanAssignments computes the target assignment and the actions to take now.
func PlanAssignments(in PlanInput) Plan {
	var eligible []Worker
	for _, w := range in.Workers {
		if !w.Draining {
			eligible = append(eligible, w)
		}
	}
	live := map[string]bool{}
	for _, w := range in.Workers {
		live[w.ID] = true
	}
	cur := map[PartitionID]Assignment{}
	for _, a := range in.Current {
		cur[a.Partition] = a
	}
	var p Plan
	i := 0
	for _, tl := range in.TaskLists {
		for n := 0; n < tl.Partitions; n++ {
			id := PartitionID{Domain: tl.Domain, TaskList: tl.Name, Partition: n}
			a := cur[id]
			owner := ""
			if (a.State == Assigned || a.State == Releasing) && live[a.Owner] {
				owner = a.Owner
			} else if len(eligible) > 0 {
				owner = eligible[i%len(eligible)].ID
				i++
				p.Assign = append(p.Assign, Move{Partition: id, From: a.Owner, To: owner})
			}
			p.Target = append(p.Target, Placement{Partition: id, Owner: owner})
		}
	}
	if len(eligible) == 0 {
		p.Reason = "no eligible worker"
	}
	p.Moves = p.Assign
	return p
}
