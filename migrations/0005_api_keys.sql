-- 0005_api_keys.sql — API keys (issue 8, point 6).
--
-- A key is "cqrsd_" and 64 hex digits (32 random bytes); only its SHA-256 is
-- stored: with 256 bits of entropy a fast hash is enough (no dictionary to
-- try), and the server checks a key with one hash and one lookup. prefix is
-- the first 8 hex digits, to tell keys apart in `cqrsd keys list`.
-- Every instance reads the keys not revoked every 500 ms, so a revocation
-- takes effect within a second everywhere.
CREATE TABLE api_keys (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL DEFAULT '',
    prefix     text NOT NULL,
    hash       bytea NOT NULL UNIQUE CHECK (length(hash) = 32),
    scopes     text[] NOT NULL
               CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['command', 'query', 'admin']),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
