package mysqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/helixcoord/helix/engine"
)

var selectLease = "SELECT owner_id, epoch, " + us("expires_at") + ", status, " + nowUS +
	" FROM helix_leases WHERE cluster = ? AND lock_key = ?"

type rowScanner interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// readLease reads a lease row and the server's clock with it; forUpdate locks it. A
// missing row reads no clock (now is zero): only AcquireLease needs one then.
func (s *Store) readLease(ctx context.Context, q rowScanner, key string, forUpdate bool) (l engine.Lease, now time.Time, found bool, err error) {
	query := selectLease
	if forUpdate {
		query += " FOR UPDATE"
	}
	var exp, nowV int64
	var status uint8
	start := time.Now()
	err = q.QueryRowContext(ctx, query, s.cluster, key).Scan(&l.Owner, &l.Epoch, &exp, &status, &nowV)
	if errors.Is(err, sql.ErrNoRows) {
		return engine.Lease{Key: key}, now, false, nil
	}
	if err != nil {
		return l, now, false, err
	}
	l.Key, l.ExpiresAt, l.Status = key, fromUS(exp), engine.LeaseStatus(status)
	return l, s.observe(nowV, start), true, nil
}

func (s *Store) nowOn(ctx context.Context, q rowScanner) (time.Time, error) {
	var v int64
	start := time.Now()
	if err := q.QueryRowContext(ctx, "SELECT "+nowUS).Scan(&v); err != nil {
		return time.Time{}, err
	}
	return s.observe(v, start), nil
}

// readLeaseRetry is readLease on the pool with retries.
func (s *Store) readLeaseRetry(ctx context.Context, key string) (l engine.Lease, now time.Time, found bool, err error) {
	bo := newBackoff()
	for {
		l, now, found, err = s.readLease(ctx, s.db, key, false)
		if err == nil || !retryable(err) || !bo.wait(ctx) {
			return
		}
	}
}

// AcquireLease implements engine.Store. A standby polling a held lease costs one plain
// SELECT; taking or renewing it is a transaction around a locking read of the row.
func (s *Store) AcquireLease(ctx context.Context, key, owner string, ttl time.Duration) (engine.LeaseReply, error) {
	if err := engine.ValidateAcquire(key, owner, ttl); err != nil {
		return engine.LeaseReply{}, err
	}
	// Fast refusal from a plain read: the row was held at that instant of server time,
	// which is all a refusal says.
	if l, now, found, err := s.readLeaseRetry(ctx, key); err != nil {
		return engine.LeaseReply{}, s.wrap("acquire", err)
	} else if found && l.HeldAt(now) && l.Owner != owner {
		return engine.LeaseReply{}, &engine.LeaseHeldError{Key: key, Holder: l.Owner, Epoch: l.Epoch, ExpiresAt: l.ExpiresAt, Now: now}
	}
	var reply engine.LeaseReply
	var held *engine.LeaseHeldError
	err := s.inTx(ctx, "acquire", func(tx *sql.Tx) error {
		held = nil
		l, now, found, err := s.readLease(ctx, tx, key, true)
		if err != nil {
			return err
		}
		switch {
		case !found:
			if now, err = s.nowOn(ctx, tx); err != nil {
				return err
			}
			l.Epoch = 1
		case l.HeldAt(now) && l.Owner == owner:
			// renewal by the holder: same tenure, same epoch
		case l.HeldAt(now):
			held = &engine.LeaseHeldError{Key: key, Holder: l.Owner, Epoch: l.Epoch, ExpiresAt: l.ExpiresAt, Now: now}
			return nil
		default:
			l.Epoch++
		}
		l.Owner, l.Status = owner, engine.LeaseActive
		l.ExpiresAt = now.Add(ttl).Truncate(time.Microsecond)
		if !found {
			_, err = tx.ExecContext(ctx, "INSERT INTO helix_leases (cluster, lock_key, owner_id, epoch, expires_at, status) VALUES (?, ?, ?, ?, ?, 1)",
				s.cluster, key, owner, l.Epoch, l.ExpiresAt)
			if isDup(err) {
				return &retryNow{err}
			}
		} else {
			_, err = tx.ExecContext(ctx, "UPDATE helix_leases SET owner_id = ?, epoch = ?, expires_at = ?, status = 1 WHERE cluster = ? AND lock_key = ?",
				owner, l.Epoch, l.ExpiresAt, s.cluster, key)
		}
		reply = engine.LeaseReply{Reply: engine.Reply{Now: now}, Lease: l}
		return err
	}, func(ctx context.Context) (bool, error) {
		l, _, found, err := s.readLease(ctx, s.db, key, false)
		if err != nil {
			return false, err
		}
		// Our write is the row exactly (owner, epoch and the expiry we computed).
		return found && l.Owner == owner && l.Epoch == reply.Lease.Epoch && l.Status == engine.LeaseActive && l.ExpiresAt.Equal(reply.Lease.ExpiresAt), nil
	})
	if err != nil {
		return engine.LeaseReply{}, err
	}
	if held != nil {
		return engine.LeaseReply{}, held
	}
	return reply, nil
}

// RenewLease implements engine.Store: one UPDATE whose WHERE checks owner, epoch and
// unexpired-by-server-time, then one SELECT for the reply. Repeating the UPDATE after a
// lost reply is harmless (it extends the same tenure again), so it is retried.
func (s *Store) RenewLease(ctx context.Context, key, owner string, epoch uint64, ttl time.Duration) (engine.LeaseReply, error) {
	if err := engine.ValidateRenew(key, owner, epoch, ttl); err != nil {
		return engine.LeaseReply{}, err
	}
	n, err := s.exec(ctx, "UPDATE helix_leases SET expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND "+
		"WHERE cluster = ? AND lock_key = ? AND owner_id = ? AND epoch = ? AND status = 1 AND expires_at > UTC_TIMESTAMP(6)",
		ttlMicros(ttl), s.cluster, key, owner, epoch)
	if err != nil {
		return engine.LeaseReply{}, s.wrap("renew", err)
	}
	if n == 0 {
		return engine.LeaseReply{}, s.wrap("renew", fmt.Errorf("renew lease %q by %q at epoch %d: not held (expired or taken): %w", key, owner, epoch, engine.ErrLeaseLost))
	}
	l, now, found, err := s.readLeaseRetry(ctx, key)
	if err != nil {
		return engine.LeaseReply{}, s.wrap("renew", err)
	}
	if !found || l.Owner != owner || l.Epoch != epoch || !l.HeldAt(now) {
		return engine.LeaseReply{}, s.wrap("renew", fmt.Errorf("renew lease %q by %q at epoch %d: lost right after renewal: %w", key, owner, epoch, engine.ErrLeaseLost))
	}
	return engine.LeaseReply{Reply: engine.Reply{Now: now}, Lease: l}, nil
}

func ttlMicros(ttl time.Duration) int64 { return max(1, ttl.Microseconds()) }

// ReleaseLease implements engine.Store. A lost reply is resolved by reading the row: a
// lease inactive at our epoch was released by us (only the holder of an epoch can
// release it; fence-bump changes the epoch).
func (s *Store) ReleaseLease(ctx context.Context, key, owner string, epoch uint64) (engine.LeaseReply, error) {
	if err := engine.ValidateRelease(key, owner, epoch); err != nil {
		return engine.LeaseReply{}, err
	}
	bo := newBackoff()
	for {
		res, err := s.db.ExecContext(ctx, "UPDATE helix_leases SET owner_id = '', status = 0, expires_at = UTC_TIMESTAMP(6) "+
			"WHERE cluster = ? AND lock_key = ? AND owner_id = ? AND epoch = ? AND status = 1 AND expires_at > UTC_TIMESTAMP(6)",
			s.cluster, key, owner, epoch)
		var n int64
		if err == nil {
			n, err = res.RowsAffected()
		}
		if err != nil && !retryable(err) {
			return engine.LeaseReply{}, s.wrap("release", err)
		}
		l, now, found, rerr := s.readLeaseRetry(ctx, key)
		if rerr != nil {
			return engine.LeaseReply{}, s.wrap("release", rerr)
		}
		if err != nil {
			// The UPDATE failed or its reply was lost: the row tells which.
			switch {
			case found && l.Status == engine.LeaseInactive && l.Epoch == epoch:
				n = 1 // it was applied
			case found && l.Owner == owner && l.Epoch == epoch && l.HeldAt(now):
				// proven not applied: try again
				if !bo.wait(ctx) {
					return engine.LeaseReply{}, s.wrap("release", err)
				}
				continue
			}
		}
		if n == 0 || !found {
			return engine.LeaseReply{}, s.wrap("release", fmt.Errorf("release lease %q by %q at epoch %d: %w", key, owner, epoch, engine.ErrLeaseLost))
		}
		return engine.LeaseReply{Reply: engine.Reply{Now: now}, Lease: l}, nil
	}
}

// ReadLease implements engine.Store.
func (s *Store) ReadLease(ctx context.Context, key string) (engine.LeaseReply, error) {
	if err := engine.ValidateName("lease.key", key); err != nil {
		return engine.LeaseReply{}, err
	}
	l, now, found, err := s.readLeaseRetry(ctx, key)
	if err != nil {
		return engine.LeaseReply{}, s.wrap("read_lease", err)
	}
	if !found {
		return engine.LeaseReply{}, s.wrap("read_lease", fmt.Errorf("lease %q: %w", key, engine.ErrNotFound))
	}
	return engine.LeaseReply{Reply: engine.Reply{Now: now}, Lease: l}, nil
}

// FenceBump is the operator's tool after a failover to a replica that may have lost
// recent commits: in one transaction it raises the epoch of every lease of the cluster
// by `by` and frees it (status inactive, no owner, expired now), so that no grant the
// old primary issued and the new one lost can ever be issued again; rows keep refusing
// writes from any epoch below theirs. Deletable leases stay deletable. It returns the
// number of leases bumped.
func (s *Store) FenceBump(ctx context.Context, by uint64) (int64, error) {
	if by == 0 {
		return 0, engine.Invalid("fence-bump.by", "0", "must be ≥ 1")
	}
	var n int64
	err := s.inTx(ctx, "fence_bump", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE helix_leases SET epoch = epoch + ?, owner_id = '', "+
			"status = IF(status = 2, 2, 0), expires_at = UTC_TIMESTAMP(6) WHERE cluster = ?", by, s.cluster)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	}, nil)
	return n, err
}
