-- helix schema version 3: one process per node identity.
--
-- A lease is owned by a process token, "node id#nonce" (engine.LeaseOwner), not by the
-- bare node id, so that two processes started with one id never share an epoch: the
-- owner column grows to hold an id of 128 bytes, the separator and a 32-byte nonce.
-- A node row records which process registered it (the same token) and where it runs
-- (host, pid), so that a second process with the same id is refused while the first
-- is alive, and the refusal can say who holds the id.
--
-- Re-running this migration after an interruption: MODIFY is idempotent; a repeated
-- ADD COLUMN fails with "duplicate column name" (1060), which Migrate counts as done.
ALTER TABLE helix_leases MODIFY owner_id VARBINARY(192) NOT NULL DEFAULT '';

ALTER TABLE helix_nodes
  ADD COLUMN process VARBINARY(192)  NOT NULL DEFAULT '',
  ADD COLUMN host    VARBINARY(255)  NOT NULL DEFAULT '',
  ADD COLUMN pid     BIGINT UNSIGNED NOT NULL DEFAULT 0;
