-- helix schema version 4: give-backs (issue 11).
--
-- A worker whose handler keeps failing on a partition gives it back (Store.GiveBack):
-- the row becomes unassigned and records who gave it back and when (store time), so
-- that the coordinator keeps the partition off that node for a cool-down. Later writes
-- keep both columns; they are informational, never a precondition.
ALTER TABLE helix_assignments
  ADD COLUMN given_back_by VARBINARY(128) NOT NULL DEFAULT '',
  ADD COLUMN given_back_at DATETIME(6) NULL DEFAULT NULL;
