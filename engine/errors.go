package engine

import (
	"errors"
	"fmt"
	"strings"
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
	// ErrNodeInUse: an exclusive registration found the id held by another live process.
	// The error is a *NodeInUseError naming that process and when its registration
	// expires. Nothing was written.
	ErrNodeInUse = errors.New("node id in use by another process")
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

// NodeInUseError is returned (wrapping ErrNodeInUse) when a process registers a node id
// whose current incarnation belongs to another process that is still alive (its
// heartbeat is not older than the caller's DeadAfter, by store time).
type NodeInUseError struct {
	ID          string
	Incarnation uint64 // the holder's
	// Holder is the process that holds the id (Process may be empty for an old holder).
	Holder NodeProcess
	// By, when set, is the process taking the id over (Replace) that stands in the way:
	// the caller was replaced, or a takeover is already pending.
	By NodeProcess
	// Pending: this caller's Replace was recorded; it gets the id once the holder's
	// registration expires (at ExpiresAt): retry then.
	Pending bool
	// LastHeartbeat and Now are store time; ExpiresAt = LastHeartbeat + the caller's
	// DeadAfter: if the holder heartbeats no more, the id is free from then on.
	LastHeartbeat time.Time
	ExpiresAt     time.Time
	Now           time.Time
}

func (p NodeProcess) describe() string {
	where := "an unknown host"
	if p.Host != "" {
		where = "host " + p.Host
	}
	if p.PID > 0 {
		where += fmt.Sprintf(", pid %d", p.PID)
	}
	return where
}

func (e *NodeInUseError) Error() string {
	left := max(e.ExpiresAt.Sub(e.Now), 0).Round(time.Millisecond)
	at := e.ExpiresAt.UTC().Format(time.RFC3339Nano)
	switch {
	case e.Pending:
		return fmt.Sprintf("node id %q: taking it over (replace) from the process on %s (incarnation %d); its heartbeats are refused from now on, "+
			"and the id is ours once its registration expires in %v (at %s store time)", e.ID, e.Holder.describe(), e.Incarnation, left, at)
	case e.By.Process != "":
		return fmt.Sprintf("node id %q is being taken over (replace) by the process on %s; the registration of incarnation %d expires in %v (at %s store time)",
			e.ID, e.By.describe(), e.Incarnation, left, at)
	}
	return fmt.Sprintf("node id %q is held by another live process (%s, incarnation %d, last heartbeat %v ago); "+
		"its registration expires in %v (at %s store time) unless that process heartbeats again: "+
		"stop it, wait, or take the id over with --replace (helix.WithReplace)",
		e.ID, e.Holder.describe(), e.Incarnation, e.Now.Sub(e.LastHeartbeat).Round(time.Millisecond), left, at)
}

func (e *NodeInUseError) Unwrap() error { return ErrNodeInUse }

// RegistrationHeld is the exclusive-registration rule of Store.RegisterNode, shared by
// every backend: given the id's current row (cur) at store time now, it returns nil if
// spec may register now, or the *NodeInUseError that refuses it. When the refusal is
// Pending the backend records spec's process as cur's ReplaceBy in the same transaction
// (from then on it refuses the holder's heartbeats).
func RegistrationHeld(spec NodeSpec, cur NodeInfo, now time.Time) *NodeInUseError {
	if spec.DeadAfter <= 0 || cur.Status != NodeAlive || cur.Incarnation == 0 {
		return nil
	}
	if now.Sub(cur.LastHeartbeat) > spec.DeadAfter {
		return nil // older than dead_after: the holder's own timer has stopped it
	}
	me := NodeProcess{Process: spec.Process, Host: spec.Host, PID: spec.PID}
	refuse := &NodeInUseError{ID: cur.ID, Incarnation: cur.Incarnation, Holder: NodeProcess{Process: cur.Process, Host: cur.Host, PID: cur.PID},
		LastHeartbeat: cur.LastHeartbeat, ExpiresAt: cur.LastHeartbeat.Add(spec.DeadAfter), Now: now}
	switch by := cur.ReplaceBy; {
	case by.Process != "" && by.Process != spec.Process:
		// Someone is taking the id over: the holder (replaced) and anyone else wait.
		refuse.By = by
		return refuse
	case by.Process != "":
		// Our own takeover, still waiting for the expiry: the same refusal as the first
		// (By is the recorded replacer), so that the backend keeps ReplaceBy as it is.
		refuse.Pending, refuse.By = true, by
		return refuse
	case spec.Process != "" && cur.Process == spec.Process:
		return nil // this process's own retry (its earlier reply was lost)
	case spec.Replace:
		refuse.Pending, refuse.By = true, me
		return refuse
	}
	return refuse
}

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

// Process tokens. A lease is owned by one process, not by a node id: two processes
// started with the same id (two hosts with one hostname, a restarted pod whose old copy
// still runs) must never share an epoch, so the owner is the id plus a nonce drawn per
// process. The id stays readable in front of the separator.
const (
	// OwnerSeparator separates the node id from the process nonce in a lease owner.
	OwnerSeparator = "#"
	// MaxNonceBytes bounds a process nonce (Config.Nonce).
	MaxNonceBytes = 32
	// MaxOwnerBytes bounds a lease owner: a node id, the separator and a nonce.
	MaxOwnerBytes = MaxNameBytes + len(OwnerSeparator) + MaxNonceBytes
	// MaxHostBytes bounds the host name a node records at registration.
	MaxHostBytes = 255
)

// LeaseOwner is the lease owner (and registration Process) token of one process of node
// id: "id#nonce", or the bare id when nonce is empty.
func LeaseOwner(id, nonce string) string {
	if nonce == "" {
		return id
	}
	return id + OwnerSeparator + nonce
}

// OwnerNodeID is the node id part of a lease owner token (the whole string for an owner
// without a nonce), for status pages and logs.
func OwnerNodeID(owner string) string {
	if i := strings.LastIndex(owner, OwnerSeparator); i > 0 {
		return owner[:i]
	}
	return owner
}

// ValidateOwner checks a lease owner: like a name, but up to MaxOwnerBytes.
func ValidateOwner(field, s string) error { return validateText(field, s, MaxOwnerBytes) }

// ValidateNonce checks a process nonce: empty (derived from the node's seed) or 1–32
// ASCII letters and digits.
func ValidateNonce(field, s string) error {
	if len(s) > MaxNonceBytes {
		return Invalid(field, fmt.Sprintf("%.40q", s), fmt.Sprintf("must be at most %d bytes", MaxNonceBytes))
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return Invalid(field, fmt.Sprintf("%q", s), "must be ASCII letters and digits")
		}
	}
	return nil
}

// ValidateName checks a domain, task list, node id or lease key: 1–128 bytes, no
// control characters, valid UTF-8.
func ValidateName(field, s string) error { return validateText(field, s, MaxNameBytes) }

func validateText(field, s string, maxBytes int) error {
	if len(s) == 0 || len(s) > maxBytes {
		return Invalid(field, fmt.Sprintf("%.40q", s), fmt.Sprintf("must be 1–%d bytes, is %d", maxBytes, len(s)))
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
	return validateProcess(n)
}

// validateProcess checks the process fields of a registration; all are optional.
func validateProcess(n NodeSpec) error {
	if n.Process != "" {
		if err := ValidateOwner("node.process", n.Process); err != nil {
			return err
		}
	}
	if len(n.Host) > MaxHostBytes {
		return Invalid("node.host", fmt.Sprintf("%.40q", n.Host), fmt.Sprintf("must be at most %d bytes", MaxHostBytes))
	}
	if n.Host != "" {
		if err := validateText("node.host", n.Host, MaxHostBytes); err != nil {
			return err
		}
	}
	if n.PID < 0 {
		return Invalid("node.pid", fmt.Sprint(n.PID), "must be ≥ 0")
	}
	if n.DeadAfter < 0 {
		return Invalid("node.dead_after", n.DeadAfter.String(), "must be ≥ 0 (0: registration is not exclusive)")
	}
	if n.Replace && n.Process == "" {
		// The store records the replacing process as the row's ReplaceBy, which is what
		// refuses the holder's heartbeats: a takeover that names nobody would not.
		return Invalid("node.replace", "true", "needs node.process (the process taking the id over)")
	}
	return nil
}
