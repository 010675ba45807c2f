package sim

// evKind is what a queued event does when its time comes.
type evKind uint8

const (
	evStart  evKind = iota + 1 // a node process starts: first Tick
	evTick                     // a WakeAt came due
	evArrive                   // a request reaches the store
	evReply                    // a reply reaches its node
	evAction                   // a timeline action
	evUndo                     // the end of a temporary fault (For elapsed)
	evResume                   // a paused node resumes
	evSample                   // once per virtual second: timeline sample, liveness
	evHeal                     // faults stop, the core is healed
	evEnd                      // the run ends: liveness check
	evFail                     // a partition handler fails (failing.go)
	evProbe                    // a boundary probe of the store (probes.go)
)

var evNames = [...]string{"", "start", "tick", "arrive", "reply", "action", "undo", "resume", "sample", "heal", "end", "fail", "probe"}

func (k evKind) String() string { return evNames[k] }

// event is one entry of the virtual-time queue. Events run in (at, seq) order: seq is a
// global counter, so two events at the same instant run in the order they were queued,
// which is itself deterministic.
type event struct {
	at    int64 // virtual ns since T0
	seq   uint64
	kind  evKind
	node  int32
	gen   uint32 // node process generation the event belongs to
	token uint64 // wake token (evTick)
	req   *request
	act   *Action
	undo  undoFn
	fail  *handlerFailure // evFail
}

type undoFn func(s *Sim)

// queue is a binary min-heap of (time, seq, slot) keys; the events themselves live in a
// slab indexed by slot. The heap's entries hold no pointers, so sifting them costs no
// GC write barriers (moving whole events through the heap did, at a fifth of the run
// time), and slots are reused through a free list.
type queue struct {
	h    []qkey
	slab []event
	free []int32
}

type qkey struct {
	at   int64
	seq  uint64
	slot int32
}

func (k qkey) less(o qkey) bool {
	if k.at != o.at {
		return k.at < o.at
	}
	return k.seq < o.seq
}

func (q *queue) len() int { return len(q.h) }

// peek is the time of the next event; the queue must not be empty.
func (q *queue) peek() int64 { return q.h[0].at }

func (q *queue) push(e event) {
	var slot int32
	if n := len(q.free); n > 0 {
		slot = q.free[n-1]
		q.free = q.free[:n-1]
		q.slab[slot] = e
	} else {
		slot = int32(len(q.slab))
		q.slab = append(q.slab, e)
	}
	q.h = append(q.h, qkey{e.at, e.seq, slot})
	h := q.h
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !h[i].less(h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (q *queue) pop() event {
	h := q.h
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h = h[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && h[r].less(h[l]) {
			m = r
		}
		if !h[m].less(h[i]) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	q.h = h
	e := q.slab[top.slot]
	q.slab[top.slot] = event{}
	q.free = append(q.free, top.slot)
	return e
}
