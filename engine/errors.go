package engine

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Sentinel errors of the Store contract. Backends wrap them with detail; callers test
// them with errors.Is. What each means for the caller:
var (
	// ErrLeaseHeld: another owner holds the lease. The error is a *LeaseHeldError with
	// the holder and the expiry.
	ErrLeaseHeld = errors.New("lease held by another owner")
	// ErrLeaseLost: a renew or release named an owner/epoch that no longer holds the
	// lease (it expired, or someone else took it). The caller must stop acting as holder.
	ErrLeaseLost = errors.New("lease lost")
	// ErrFenced: a fenced write carried an epoch that is not the current, unexpired epoch
	// of the fencing lease. Nothing was written. The caller must step down.
	ErrFenced = errors.New("write fenced: stale or expired epoch")
	// ErrNodeDead: the node incarnation was declared dead, deregistered or replaced by a
	// newer one. It must stop all its partitions and register again.
	ErrNodeDead = errors.New("node incarnation is dead")
	// ErrNotFound: the named row does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a precondition of a conditional write no longer holds (a row changed
	// since the caller read it, or a node marked dead heartbeated meanwhile). Nothing was
	// written; re-read and plan again.
	ErrConflict = errors.New("conflict: row changed since it was read")
	// ErrInvalid: bad input. The error is a *ValidationError naming the field and rule.
	ErrInvalid = errors.New("invalid input")
	// ErrUnavailable: the store could not be reached or did not answer in time. The
	// outcome of a write is unknown (it may have been applied): re-read, never repeat
	// blindly.
	ErrUnavailable = errors.New("store unavailable")
)

// LeaseHeldError is returned (wrapping ErrLeaseHeld) when a lease is held by another owner.
type LeaseHeldError struct {
	Key       string
	Holder    string
	Epoch     uint64
	ExpiresAt time.Time // store time
	Now       time.Time // store time of the refusal
}

func (e *LeaseHeldError) Error() string {
	return fmt.Sprintf("lease %q held by %q (epoch %d) for another %v", e.Key, e.Holder, e.Epoch, e.ExpiresAt.Sub(e.Now))
}

func (e *LeaseHeldError) Unwrap() error { return ErrLeaseHeld }

// ValidationError is bad input: Field names what was wrong, Rule the rule it broke.
// It wraps ErrInvalid.
type ValidationError struct {
	Field string // e.g. "tasklist.name", "config.LeaseTTL"
	Value string // the offending value, quoted for the message; may be empty
	Rule  string // e.g. "must be 1–128 bytes"
}

func (e *ValidationError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("invalid %s: %s", e.Field, e.Rule)
	}
	return fmt.Sprintf("invalid %s %s: %s", e.Field, e.Value, e.Rule)
}

func (e *ValidationError) Unwrap() error { return ErrInvalid }

// Invalid builds a *ValidationError.
func Invalid(field, value, rule string) error {
	return &ValidationError{Field: field, Value: value, Rule: rule}
}

// Limits of names and sizes, shared by every validator.
const (
	MaxNameBytes  = 128
	MaxPartitions = 65536
)

// ValidateName checks a domain, task list, node id or lease key: 1–128 bytes, no
// control characters, valid UTF-8.
func ValidateName(field, s string) error {
	if len(s) == 0 || len(s) > MaxNameBytes {
		return Invalid(field, fmt.Sprintf("%.40q", s), fmt.Sprintf("must be 1–%d bytes, is %d", MaxNameBytes, len(s)))
	}
	if !utf8.ValidString(s) {
		return Invalid(field, fmt.Sprintf("%.40q", s), "must be valid UTF-8")
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7F || (r >= 0x80 && r < 0xA0) {
			return Invalid(field, fmt.Sprintf("%.40q", s), "must not contain control characters")
		}
	}
	return nil
}

// ValidateTaskList checks a task list's names and partition count.
func ValidateTaskList(tl TaskList) error {
	if err := ValidateName("tasklist.domain", tl.Domain); err != nil {
		return err
	}
	if err := ValidateName("tasklist.name", tl.Name); err != nil {
		return err
	}
	if tl.Partitions < 1 || tl.Partitions > MaxPartitions {
		return Invalid("tasklist.partitions", fmt.Sprint(tl.Partitions), fmt.Sprintf("must be 1–%d", MaxPartitions))
	}
	return nil
}

// ValidateNodeSpec checks a node's id, capacity and labels.
func ValidateNodeSpec(n NodeSpec) error {
	if err := ValidateName("node.id", n.ID); err != nil {
		return err
	}
	if n.Capacity < 1 {
		return Invalid("node.capacity", fmt.Sprint(n.Capacity), "must be ≥ 1")
	}
	for i, l := range n.Labels {
		if err := ValidateName("node.labels.key", l.Key); err != nil {
			return err
		}
		if len(l.Value) > MaxNameBytes {
			return Invalid("node.labels.value", l.Key, fmt.Sprintf("must be at most %d bytes", MaxNameBytes))
		}
		if i > 0 && n.Labels[i-1].Key >= l.Key {
			return Invalid("node.labels", l.Key, "keys must be unique and sorted")
		}
	}
	return nil
}
