package sim

import (
	"fmt"
	"strings"
	"time"

	"github.com/helixcoord/helix/engine"
)

// hasher is FNV-1a over 64-bit words: cheap enough to feed every event and effect into,
// and stable across processes and platforms (unlike hash/maphash).
type hasher uint64

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func (h *hasher) u64(x uint64) {
	v := uint64(*h)
	for i := 0; i < 8; i++ {
		v ^= x & 0xff
		v *= fnvPrime
		x >>= 8
	}
	*h = hasher(v)
}

func (h *hasher) str(s string) {
	v := uint64(*h)
	for i := 0; i < len(s); i++ {
		v ^= uint64(s[i])
		v *= fnvPrime
	}
	v ^= 0xff // terminator, so ("ab","c") and ("a","bc") differ
	v *= fnvPrime
	*h = hasher(v)
}

func (h *hasher) part(p engine.PartitionID) {
	h.str(p.Domain)
	h.str(p.TaskList)
	h.u64(uint64(p.Partition))
}

// hashEffect feeds one effect into the trace. Everything a node asks for is in the trace:
// if two runs diverge, the first differing effect shows where.
func (h *hasher) effect(e engine.Effect) {
	switch e := e.(type) {
	case engine.StoreRequest:
		h.u64(1)
		h.u64(e.ID)
		h.u64(uint64(e.Deadline.UnixNano()))
		h.op(e.Op)
	case engine.StartPartition:
		h.u64(2)
		h.part(e.Partition)
		h.u64(e.Generation)
	case engine.StopPartition:
		h.u64(3)
		h.part(e.Partition)
		h.u64(e.Generation)
		h.u64(uint64(e.Reason))
	case engine.WakeAt:
		h.u64(4)
		h.u64(uint64(e.At.UnixNano()))
	case engine.Stopped:
		h.u64(5)
	case engine.Event:
		h.u64(6)
		h.str(e.Kind)
		h.u64(e.Epoch)
		h.str(e.Node)
		h.part(e.Partition)
		h.str(e.Detail)
	}
}

func (h *hasher) op(o engine.Op) {
	h.str(o.Name())
	switch o := o.(type) {
	case engine.OpApply:
		b := o.Batch
		h.u64(b.Fence.Epoch)
		for _, d := range b.Dead {
			h.str(d.ID)
			h.u64(d.Incarnation)
		}
		for _, c := range b.Changes {
			h.u64(uint64(c.Kind))
			h.part(c.Partition)
			h.u64(c.Revision)
			h.str(c.Owner)
			h.u64(c.Incarnation)
			h.str(c.Target)
		}
	case engine.OpAcquireLease:
		h.str(o.Owner)
	case engine.OpRenewLease:
		h.u64(o.Epoch)
	case engine.OpHeartbeat:
		h.u64(o.Incarnation)
		h.u64(o.Known)
	case engine.OpAckRelease:
		h.part(o.Ack.Partition)
		h.u64(o.Ack.Generation)
	}
}

// rec is one processed event, kept in a ring for the violation report and, with
// Options.Log, written out in full.
// Its fields are static strings or numbers, so that recording an event allocates
// nothing; the text is formatted only when it is shown.
type rec struct {
	seq  uint64
	at   int64
	kind evKind
	node string
	op   string // request name, for network events
	id   uint64 // request id
	res  string // store result ("ok" or the error class)
	note string // what happened to the message (dropped, lost, buffered)
	what string // anything else (actions, notes, a violation's tag)
	effs string // the step's effects, described only when logging (the hash has them)
}

// hashRec feeds what an event's line shows, beyond its time, kind and node (hashed when
// it began) and its effects (hashed as they happen), into the trace: two runs whose
// lines differ anywhere then have different traces.
func (h *hasher) rec(r *rec) {
	h.str(r.op)
	h.u64(r.id)
	h.str(r.res)
	h.str(r.note)
	h.str(r.what)
}

func (r rec) String() string {
	n := r.node
	if n == "" {
		n = "-"
	}
	var b strings.Builder
	if r.op != "" {
		fmt.Fprintf(&b, "%s#%d", r.op, r.id)
	}
	if r.res != "" {
		b.WriteString(" → " + r.res)
	}
	if r.note != "" {
		b.WriteString(" (" + r.note + ")")
	}
	if r.what != "" {
		if b.Len() > 0 {
			b.WriteString(" ")
		}
		b.WriteString(r.what)
	}
	b.WriteString(r.effs)
	return fmt.Sprintf("#%-7d %10s  %-8s %-6s %s", r.seq, fmtV(r.at), r.kind, n, b.String())
}

// fmtV formats virtual time as seconds with millisecond precision.
func fmtV(v int64) string {
	return fmt.Sprintf("%.3fs", time.Duration(v).Seconds())
}

// ring keeps the last len(buf) records.
type ring struct {
	buf  []rec
	next int
	full bool
}

func newRing(n int) *ring { return &ring{buf: make([]rec, n)} }

func (r *ring) add(x rec) {
	r.buf[r.next] = x
	r.next++
	if r.next == len(r.buf) {
		r.next = 0
		r.full = true
	}
}

func (r *ring) lines() []string {
	var out []string
	if r.full {
		for _, x := range r.buf[r.next:] {
			out = append(out, x.String())
		}
	}
	for _, x := range r.buf[:r.next] {
		out = append(out, x.String())
	}
	return out
}

// describeEffects summarises a step's effects for the text log.
func describeEffects(effs []engine.Effect, toV func(time.Time) int64) string {
	var b strings.Builder
	for _, e := range effs {
		switch e := e.(type) {
		case engine.StoreRequest:
			fmt.Fprintf(&b, " →%s#%d", e.Op.Name(), e.ID)
			if a, ok := e.Op.(engine.OpApply); ok {
				fmt.Fprintf(&b, "(epoch %d, dead %d, changes %d)", a.Batch.Fence.Epoch, len(a.Batch.Dead), len(a.Batch.Changes))
			}
		case engine.StartPartition:
			fmt.Fprintf(&b, " start %s@%d", e.Partition, e.Generation)
		case engine.StopPartition:
			fmt.Fprintf(&b, " stop %s@%d(%s)", e.Partition, e.Generation, e.Reason)
		case engine.WakeAt:
			fmt.Fprintf(&b, " wake@%s", fmtV(toV(e.At)))
		case engine.Stopped:
			b.WriteString(" stopped")
		case engine.Event:
			fmt.Fprintf(&b, " [%s", e.Kind)
			if e.Epoch != 0 {
				fmt.Fprintf(&b, " epoch %d", e.Epoch)
			}
			if e.Detail != "" {
				fmt.Fprintf(&b, " %s", e.Detail)
			}
			b.WriteString("]")
		}
	}
	return b.String()
}
