-- helix schema version 1.
--
-- Every table is keyed by cluster first, so one database can host several helix clusters
-- (mysqlstore.Options.Cluster, default "default"). Names are VARBINARY: they compare and
-- sort byte-wise, exactly as Go strings do, with no collation padding or case folding.
-- Times are DATETIME(6) in UTC, always written from the server's UTC_TIMESTAMP(6).

CREATE TABLE IF NOT EXISTS helix_leases (
  cluster    VARBINARY(128)  NOT NULL,
  lock_key   VARBINARY(128)  NOT NULL,
  owner_id   VARBINARY(128)  NOT NULL DEFAULT '',
  epoch      BIGINT UNSIGNED NOT NULL,
  expires_at DATETIME(6)     NOT NULL,
  -- 1 active, 0 inactive, 2 deletable. Rows are never deleted: an epoch is never reissued.
  status     TINYINT UNSIGNED NOT NULL,
  -- id of the last fenced batch written under this lease, to resolve an ambiguous commit.
  last_batch VARBINARY(16)   NOT NULL DEFAULT '',
  PRIMARY KEY (cluster, lock_key)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS helix_nodes (
  cluster        VARBINARY(128)  NOT NULL,
  id             VARBINARY(128)  NOT NULL,
  incarnation    BIGINT UNSIGNED NOT NULL,
  capacity       INT             NOT NULL,
  labels         BLOB            NOT NULL,
  draining       TINYINT UNSIGNED NOT NULL DEFAULT 0,
  -- 0 alive, 1 dead
  status         TINYINT UNSIGNED NOT NULL DEFAULT 0,
  last_heartbeat DATETIME(6)     NOT NULL,
  -- per-node assignment revision: grows at registration and at every write that changes
  -- a row the node owns or owned; a heartbeat compares it with the caller's.
  assign_rev     BIGINT UNSIGNED NOT NULL DEFAULT 0,
  PRIMARY KEY (cluster, id)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS helix_tasklists (
  cluster    VARBINARY(128) NOT NULL,
  domain     VARBINARY(128) NOT NULL,
  name       VARBINARY(128) NOT NULL,
  partitions INT            NOT NULL,
  PRIMARY KEY (cluster, domain, name)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS helix_assignments (
  cluster     VARBINARY(128)   NOT NULL,
  domain      VARBINARY(128)   NOT NULL,
  tasklist    VARBINARY(128)   NOT NULL,
  part_no     INT              NOT NULL,
  owner_id    VARBINARY(128)   NOT NULL DEFAULT '',
  incarnation BIGINT UNSIGNED  NOT NULL DEFAULT 0,
  generation  BIGINT UNSIGNED  NOT NULL DEFAULT 0,
  -- 0 unassigned, 1 assigned, 2 releasing, 3 deleted
  state       TINYINT UNSIGNED NOT NULL DEFAULT 0,
  target      VARBINARY(128)   NOT NULL DEFAULT '',
  -- coordinator epoch of the last fenced write; a lower epoch is refused
  epoch       BIGINT UNSIGNED  NOT NULL DEFAULT 0,
  revision    BIGINT UNSIGNED  NOT NULL,
  PRIMARY KEY (cluster, domain, tasklist, part_no),
  KEY helix_assignments_by_revision (cluster, revision),
  KEY helix_assignments_by_owner (cluster, owner_id)
) ENGINE=InnoDB;

-- One row per cluster: the store-wide assignment revision. Every writer of assignment
-- rows locks it first, which also orders their locks (no deadlock cycles among writers).
CREATE TABLE IF NOT EXISTS helix_revision (
  cluster  VARBINARY(128)  NOT NULL,
  revision BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (cluster)
) ENGINE=InnoDB;
