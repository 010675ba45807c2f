package sim

import (
	"fmt"
	"time"

	"github.com/helixcoord/helix/engine"
)

// Boundary probes. Random latencies almost never land a request on the exact instant a
// lease expires or a heartbeat turns dead_after old, so a store that gets `<` and `<=`
// the wrong way round there would pass every random run. The simulator therefore probes
// the store at those instants itself, with requests a correct store refuses without
// changing anything (so a probe never alters a correct run):
//
//   - at the instant a lease expires (no renewal moved its expiry), the holder's renewal
//     must be refused (S1) and an empty write fenced by its epoch must be refused (S2);
//   - at the instant a node hit by a fault has a heartbeat exactly dead_after old, a
//     write declaring it dead must be refused (S3: only an older heartbeat is dead);
//   - when a row starts releasing at generation g ≥ 2, its owner's acknowledgement of
//     generation g−1 (a stale duplicate from an earlier handoff) must be refused (S3).

// Probe kinds (event.token).
const (
	probeLease = 1
	probeDead  = 2
)

// probeLeaseAt schedules a lease probe at a store expiry instant.
func (s *Sim) probeLeaseAt(exp time.Time) {
	at := exp.Sub(T0).Nanoseconds()
	if at >= s.now && at <= s.end {
		s.push(event{at: at, kind: evProbe, token: probeLease})
	}
}

// probeDeadAfter schedules a dead-after probe for a node a fault just hit: at the instant
// its last heartbeat in the store is exactly dead_after old.
func (s *Sim) probeDeadAfter(nd *simNode) {
	r, err := s.store.ListNodes(s.ctx)
	if err != nil {
		return
	}
	for _, n := range r.Nodes {
		if n.ID == nd.id && n.Status == engine.NodeAlive {
			at := n.LastHeartbeat.Add(nd.cfg.DeadAfter).Sub(T0).Nanoseconds()
			if at >= s.now && at <= s.end {
				s.push(event{at: at, kind: evProbe, token: probeDead, node: nd.idx})
			}
		}
	}
}

func (s *Sim) probe(e event) {
	key := s.nodes[0].cfg.LeaseKey
	lr, err := s.store.ReadLease(s.ctx, key)
	if err != nil {
		return
	}
	l := lr.Lease
	switch e.token {
	case probeLease:
		if l.Status != engine.LeaseActive || !l.ExpiresAt.Equal(lr.Now) {
			return // renewed or released since: not expiring now (not an event of the run)
		}
		s.begin(e, fmt.Sprintf("probe: lease %q epoch %d expires now", key, l.Epoch))
		s.cover("probe_lease_expiry")
		if _, err := s.store.RenewLease(s.ctx, key, l.Owner, l.Epoch, s.nodes[0].cfg.LeaseTTL); err == nil {
			s.fail("S1", fmt.Sprintf("the store renewed %q's lease at epoch %d at the very instant it expired (%s)", l.Owner, l.Epoch, fmtT(l.ExpiresAt)))
		} else if _, err := s.store.Apply(s.ctx, engine.Batch{Fence: engine.Fence{Key: key, Epoch: l.Epoch}}); err == nil {
			s.fail("S2", fmt.Sprintf("the store accepted a write fenced with epoch %d at the very instant the lease expired (%s)", l.Epoch, fmtT(l.ExpiresAt)))
		}
		s.finish()
	case probeDead:
		nd := s.nodes[e.node]
		r, err := s.store.ListNodes(s.ctx)
		if err != nil {
			return
		}
		for _, n := range r.Nodes {
			if n.ID != nd.id || n.Status != engine.NodeAlive {
				continue
			}
			age := r.Now.Sub(n.LastHeartbeat)
			if age < nd.cfg.DeadAfter {
				// A heartbeat landed since: probe that one's instant instead, as long as
				// the node is still down, cut off or paused.
				if !nd.up || nd.cutoff || nd.paused {
					s.probeDeadAfter(nd)
				}
				return
			}
			if age != nd.cfg.DeadAfter || l.Status != engine.LeaseActive || !lr.Now.Before(l.ExpiresAt) {
				return
			}
			s.begin(e, fmt.Sprintf("probe: %s/%d's heartbeat is exactly dead_after old", n.ID, n.Incarnation))
			s.cover("probe_dead_after")
			b := engine.Batch{Fence: engine.Fence{Key: key, Epoch: l.Epoch}, Dead: []engine.DeadNode{{ID: n.ID, Incarnation: n.Incarnation}}, DeadAfter: nd.cfg.DeadAfter}
			if _, err := s.store.Apply(s.ctx, b); err == nil {
				s.fail("S3", fmt.Sprintf("the store declared %s/%d dead with a heartbeat exactly dead_after (%v) old, not older: it may still be processing", n.ID, n.Incarnation, nd.cfg.DeadAfter))
			}
			s.finish()
		}
	}
}

// probeStaleAcks probes, for each row a batch just set releasing, that the store refuses
// an acknowledgement of the row's previous generation by the same owner.
func (s *Sim) probeStaleAcks(b engine.Batch) {
	for _, ch := range b.Changes {
		if ch.Kind != engine.ChangeRelease {
			continue
		}
		r, ok := s.rows[ch.Partition]
		if !ok || r.State != engine.Releasing || r.Generation < 2 {
			continue
		}
		s.cover("probe_stale_ack")
		ack := engine.Ack{Partition: r.Partition, Node: r.Owner, Incarnation: r.Incarnation, Generation: r.Generation - 1}
		if _, err := s.store.AckRelease(s.ctx, ack); err == nil {
			s.fail("S3", fmt.Sprintf("the store accepted %s/%d's acknowledgement of %s at generation %d while the row releases generation %d: only the owner of the generation being released may acknowledge it",
				ack.Node, ack.Incarnation, ack.Partition, ack.Generation, r.Generation))
			return
		}
	}
}
