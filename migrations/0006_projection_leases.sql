-- 0006_projection_leases.sql — projections leased one by one (issue 9, point 2).
--
-- Every instance runs a projection runner; each projection version is run by
-- the instance holding its lease. A lease lasts CQRSD_PROJECTION_LEASE_MS and
-- its holder renews it every second; one not renewed (the instance died, was
-- paused, lost its network) is taken by another instance once it expires.
-- Instances spread the leases: each holds at most ceil(projections /
-- instances seen in the last lease period) and gives up what is over.
-- The lease is an economy, not the safety: a batch is applied only if the
-- checkpoint it started from is still the one in Redis (core/rm.c), so even
-- two runners of one projection at once apply each event once.
CREATE TABLE projection_leases (
    projection text PRIMARY KEY,          -- "<name>:v<version>"
    owner      text NOT NULL,             -- the instance's id (a UUID made at start)
    expires_at timestamptz NOT NULL
);

CREATE TABLE cqrsd_instances (
    id      text PRIMARY KEY,
    seen_at timestamptz NOT NULL
);
