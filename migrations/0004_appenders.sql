-- 0004_appenders.sql — a watermark that only appenders hold back, and group commit
-- (issue 7, points 2 and 3).
--
-- Until now readers of the global stream stopped below the xmin of their
-- snapshot: the oldest transaction of the whole server, so one transaction left
-- open in another database stalled every projection. Now an appending
-- transaction registers itself before it gets a transaction id, by taking a
-- shared advisory lock (PostgreSQL docs §13.3.5, Advisory Locks) that it holds
-- until it ends, and the reader's bound is the oldest in-progress transaction
-- of its snapshot that is not known to be a stranger.
--
-- Why no late commit is skipped. Let S be the reader's statement snapshot and
-- L its later look at pg_locks (the lock table is not MVCC: it is read when the
-- statement runs, after S was taken). An appender A:
--   - got its id after S: id >= xmax(S) >= the bound;
--   - was in progress at S and still is at L: it holds the lock (taken before
--     its id), so it is not a stranger, so the bound is <= its id;
--   - was in progress at S and ended before L: it is not running at L, so it is
--     not known to be a stranger, so the bound is <= its id.
-- A transaction is a stranger only when it is running at L without the lock;
-- it may still append later only if it registers first, and cqrsd_append
-- refuses an appender whose transaction already has an id without the lock.

-- The lock: classid 1668379251 ('cqrs' as an int4), objid 1, in this database.
CREATE FUNCTION cqrsd_register_appender() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('cqrsd.appender', true) IS NOT DISTINCT FROM 'on' THEN
        RETURN;
    END IF;
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'cqrsd_append must come before any other write of its transaction (the transaction already has an id, so a reader of the global stream may already have passed it)'
            USING ERRCODE = '25000';
    END IF;
    PERFORM pg_advisory_xact_lock_shared(1668379251, 1);
    PERFORM set_config('cqrsd.appender', 'on', true);
END
$$;

-- The exclusive upper bound of txid for a reader of the global stream, in the
-- caller's statement snapshot (the function is STABLE: it runs in it, PostgreSQL
-- docs §38.7, Function Volatility Categories). Call it once per statement, as
-- an uncorrelated sub-select. PL/pgSQL keeps its plans for the session; the
-- lock table is read only when some transaction is in progress.
CREATE FUNCTION cqrsd_read_bound() RETURNS xid8
LANGUAGE plpgsql STABLE AS $$
DECLARE
    snap  pg_snapshot := pg_current_snapshot();
    bound xid8;
BEGIN
    IF pg_snapshot_xmin(snap) = pg_snapshot_xmax(snap) THEN
        RETURN pg_snapshot_xmax(snap); -- nothing in progress
    END IF;
    SELECT min(x) INTO bound
      FROM pg_snapshot_xip(snap) AS x
     WHERE NOT EXISTS (
           SELECT 1 FROM pg_locks t
            WHERE t.locktype = 'transactionid' AND t.transactionid = xid(x) AND t.granted
              AND NOT EXISTS (
                  SELECT 1 FROM pg_locks a
                   WHERE a.locktype = 'advisory' AND a.classid = 1668379251 AND a.objid = 1
                     AND a.objsubid = 2 AND a.granted
                     AND a.virtualtransaction = t.virtualtransaction));
    RETURN coalesce(bound, pg_snapshot_xmax(snap));
END
$$;

-- The body of 0003's cqrsd_append keeps its work; the public name registers first.
ALTER FUNCTION cqrsd_append(text, text, int, jsonb, jsonb) RENAME TO cqrsd_append_streams;
COMMENT ON FUNCTION cqrsd_append_streams(text, text, int, jsonb, jsonb) IS
    'the body of cqrsd_append, without registering the appender: call cqrsd_append';

CREATE FUNCTION cqrsd_append(p_command_id text, p_request text, p_status int,
                             p_reply jsonb, p_batch jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM cqrsd_register_appender();
    RETURN cqrsd_append_streams(p_command_id, p_request, p_status, p_reply, p_batch);
END
$$;

-- Group commit: the appends of several commands in one transaction, each in its
-- own subtransaction, so one command's conflict or refused key rolls back that
-- command only.
--
-- p_commands: [{"command_id": text|null, "request": text, "status": int,
--               "reply": object|null, "batch": <cqrsd_append's p_batch>}]
-- Returns one outcome per command, in order: {"reply": ...} on success, or
-- {"sqlstate": "CQ409", "message": "...", "constraint": "commands_pkey"|null}.
-- Each subtransaction that writes takes a subtransaction id; beyond 64 in one
-- transaction every snapshot overflows (PostgreSQL docs §74.3,
-- Subtransactions), so callers send at most 64 commands per call.
CREATE FUNCTION cqrsd_append_group(p_commands jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    c   jsonb;
    out jsonb := '[]';
    r   jsonb;
    st  text;
    msg text;
    con text;
BEGIN
    PERFORM cqrsd_register_appender();
    FOR c IN SELECT x FROM jsonb_array_elements(p_commands) AS t(x) LOOP
        BEGIN
            r := cqrsd_append_streams(c->>'command_id', c->>'request', (c->>'status')::int,
                                      CASE WHEN jsonb_typeof(c->'reply') = 'object' THEN c->'reply' END,
                                      c->'batch');
            out := out || jsonb_build_array(jsonb_build_object('reply', r));
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                                    con = CONSTRAINT_NAME;
            out := out || jsonb_build_array(jsonb_build_object(
                'sqlstate', st, 'message', msg, 'constraint', nullif(con, '')));
        END;
    END LOOP;
    RETURN out;
END
$$;
