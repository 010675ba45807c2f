package mysqlstore

// Server error numbers that differ between MySQL flavours for the same situation. The
// README's Compatibility section lists the other differences (session variables,
// authentication, functions).
const (
	// erLockNowait is Oracle MySQL's (and TiDB's) answer to a locking read with NOWAIT
	// that could not take its locks at once; MariaDB answers 1205 (lock wait timeout).
	// Both changed nothing and are retried alike.
	erLockNowait = 3572 // ER_LOCK_NOWAIT
)
