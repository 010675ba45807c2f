package engine

import (
	"fmt"
	"time"
)

// The input rules of the Store contract, shared by every backend so that memstore and
// mysqlstore refuse exactly the same inputs with exactly the same field names. Each
// returns a *ValidationError (wrapping ErrInvalid).

// ValidateTTL checks a lease TTL: > 0.
func ValidateTTL(ttl time.Duration) error {
	if ttl <= 0 {
		return Invalid("lease.ttl", ttl.String(), "must be > 0")
	}
	return nil
}

// ValidateEpoch checks an epoch: ≥ 1 (a lease's first grant is epoch 1).
func ValidateEpoch(field string, epoch uint64) error {
	if epoch == 0 {
		return Invalid(field, "0", "must be ≥ 1 (epochs start at 1)")
	}
	return nil
}

// ValidateIncarnation checks an incarnation: ≥ 1.
func ValidateIncarnation(field string, inc uint64) error {
	if inc == 0 {
		return Invalid(field, "0", "must be ≥ 1 (incarnations start at 1)")
	}
	return nil
}

// ValidatePartitionID checks a partition's names and number (0–MaxPartitions−1).
func ValidatePartitionID(field string, p PartitionID) error {
	if err := ValidateName(field+".domain", p.Domain); err != nil {
		return err
	}
	if err := ValidateName(field+".tasklist", p.TaskList); err != nil {
		return err
	}
	if p.Partition < 0 || p.Partition >= MaxPartitions {
		return Invalid(field+".partition", fmt.Sprint(p.Partition), fmt.Sprintf("must be 0–%d", MaxPartitions-1))
	}
	return nil
}

// ValidateBatch checks a coordinator batch: the fence, each dead node once, each
// partition once, and each change's fields for its kind.
func ValidateBatch(b Batch) error {
	if err := ValidateName("batch.fence.key", b.Fence.Key); err != nil {
		return err
	}
	if err := ValidateEpoch("batch.fence.epoch", b.Fence.Epoch); err != nil {
		return err
	}
	if len(b.Dead) > 0 && b.DeadAfter <= 0 {
		return Invalid("batch.dead_after", b.DeadAfter.String(), "must be > 0 when nodes are declared dead")
	}
	seenDead := map[string]bool{}
	for i, d := range b.Dead {
		f := fmt.Sprintf("batch.dead[%d]", i)
		if err := ValidateName(f+".id", d.ID); err != nil {
			return err
		}
		if err := ValidateIncarnation(f+".incarnation", d.Incarnation); err != nil {
			return err
		}
		if seenDead[d.ID] {
			return Invalid(f+".id", d.ID, "must appear once per batch")
		}
		seenDead[d.ID] = true
	}
	seen := map[PartitionID]bool{}
	for i, c := range b.Changes {
		f := fmt.Sprintf("batch.changes[%d]", i)
		if err := ValidatePartitionID(f+".partition", c.Partition); err != nil {
			return err
		}
		if seen[c.Partition] {
			return Invalid(f+".partition", c.Partition.String(), "must appear once per batch")
		}
		seen[c.Partition] = true
		switch c.Kind {
		case ChangeAssign:
			if err := ValidateName(f+".owner", c.Owner); err != nil {
				return err
			}
			if err := ValidateIncarnation(f+".incarnation", c.Incarnation); err != nil {
				return err
			}
		case ChangeRelease:
			if c.Target != "" {
				if err := ValidateName(f+".target", c.Target); err != nil {
					return err
				}
			}
		case ChangeUnassign, ChangeDelete:
		default:
			return Invalid(f+".kind", fmt.Sprint(uint8(c.Kind)), "must be assign, release, unassign or delete")
		}
	}
	return nil
}

// ValidateNodeUpdate checks a node id and the fields a NodeUpdate sets, by the
// registration rules (capacity ≥ 1, labels sorted and unique).
func ValidateNodeUpdate(id string, u NodeUpdate) error {
	if err := ValidateName("node.id", id); err != nil {
		return err
	}
	if u.Capacity == nil && u.Labels == nil {
		return nil
	}
	spec := NodeSpec{ID: id, Capacity: 1}
	if u.Capacity != nil {
		spec.Capacity = *u.Capacity
	}
	if u.Labels != nil {
		spec.Labels = *u.Labels
	}
	return ValidateNodeSpec(spec)
}

// The input rules of each Store call that takes loose arguments. Fields are checked in
// the order they appear, and the first failure is the one reported.

// ValidateAcquire checks AcquireLease's arguments.
func ValidateAcquire(key, owner string, ttl time.Duration) error {
	return firstErr(ValidateName("lease.key", key), ValidateOwner("lease.owner", owner), ValidateTTL(ttl))
}

// ValidateRenew checks RenewLease's arguments.
func ValidateRenew(key, owner string, epoch uint64, ttl time.Duration) error {
	return firstErr(ValidateName("lease.key", key), ValidateOwner("lease.owner", owner), ValidateEpoch("lease.epoch", epoch), ValidateTTL(ttl))
}

// ValidateRelease checks ReleaseLease's arguments.
func ValidateRelease(key, owner string, epoch uint64) error {
	return firstErr(ValidateName("lease.key", key), ValidateOwner("lease.owner", owner), ValidateEpoch("lease.epoch", epoch))
}

// ValidateNodeIncarnation checks a node id and incarnation (Heartbeat, DeregisterNode).
func ValidateNodeIncarnation(id string, incarnation uint64) error {
	return firstErr(ValidateName("node.id", id), ValidateIncarnation("node.incarnation", incarnation))
}

// ValidateTaskListName checks a task list's domain and name (DeleteTaskList).
func ValidateTaskListName(domain, name string) error {
	return firstErr(ValidateName("tasklist.domain", domain), ValidateName("tasklist.name", name))
}

// ValidateAck checks a release acknowledgement.
func ValidateAck(a Ack) error {
	return firstErr(ValidatePartitionID("ack.partition", a.Partition), ValidateName("ack.node", a.Node), ValidateIncarnation("ack.incarnation", a.Incarnation))
}

// ValidateGiveBack checks a give-back (Store.GiveBack); field names give_back.….
func ValidateGiveBack(g Ack) error {
	return firstErr(ValidatePartitionID("give_back.partition", g.Partition), ValidateName("give_back.node", g.Node), ValidateIncarnation("give_back.incarnation", g.Incarnation))
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
