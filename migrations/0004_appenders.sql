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
-- Why no late commit is skipped. Let S be the reader's statement snapshot. The
-- reader first reads the lock table once (pg_locks is not MVCC; one call of it
-- is one consistent picture of the main lock table, which holds both the
-- advisory locks and each transaction's lock on its own id), then asks each
-- in-progress xid of S for its status now (pg_xact_status, not MVCC either).
-- A transaction is a stranger when it held no appender lock in that picture
-- and is still in progress after it. An appender A in S's xip:
--   - still in progress after the picture was in progress during it, and
--     held its lock all along (taken before its id, released only after it
--     leaves the in-progress list: CommitTransaction ends the transaction in
--     the proc array before it releases locks), so it is in the picture:
--     not a stranger, and the bound is <= its id;
--   - committed or aborted by then: not in progress, so not a stranger, and
--     the bound is <= its id too (its events are not in S: the reader waits
--     for its next look);
--   - with an id taken after S: the id is >= xmax(S) >= the bound.
-- A transaction that is not an appender may append later only by registering,
-- and cqrsd_append refuses one that already has an id without the lock.

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
    snap      pg_snapshot := pg_current_snapshot();
    appenders xid[];
    bound     xid8;
BEGIN
    IF pg_snapshot_xmin(snap) = pg_snapshot_xmax(snap) THEN
        RETURN pg_snapshot_xmax(snap); -- nothing in progress
    END IF;
    -- one picture of the lock table: the ids of the transactions holding
    -- the appender lock (their own-id lock and the advisory lock share a
    -- virtual transaction id)
    WITH l AS MATERIALIZED (
        SELECT locktype, transactionid, virtualtransaction, classid, objid, objsubid, mode, granted
          FROM pg_locks)
    SELECT array_agg(t.transactionid) INTO appenders
      FROM l t JOIN l a ON a.virtualtransaction = t.virtualtransaction
     WHERE t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock' AND t.granted
       AND a.locktype = 'advisory' AND a.classid = 1668379251 AND a.objid = 1
       AND a.objsubid = 2 AND a.granted;
    -- then, after it, which of the others are still in progress: strangers
    SELECT min(x) INTO bound
      FROM pg_snapshot_xip(snap) AS x
     WHERE xid(x) = ANY (coalesce(appenders, '{}'))
        OR pg_xact_status(x) IS DISTINCT FROM 'in progress';
    RETURN coalesce(bound, pg_snapshot_xmax(snap));
END
$$;

-- The body of an append, without registering the appender (call cqrsd_append,
-- or cqrsd_append_group): 0003's cqrsd_append, the same checks and writes, with
-- fewer statements per call. PL/pgSQL runs a "simple expression" without the
-- executor, while each SQL statement starts one (PostgreSQL docs §43.11.2,
-- Plan Caching): the entries are walked by index, and the event-id lookup runs
-- only for an entry whose events carry event ids.
DROP FUNCTION cqrsd_append(text, text, int, jsonb, jsonb);
CREATE FUNCTION cqrsd_append_streams(p_command_id text, p_request text, p_status int,
                                     p_reply jsonb, p_batch jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    s        jsonb;
    evs      jsonb;
    sid      text;
    n        int;
    expected bigint;
    newv     bigint;
    cur      bigint;
    dup      int;
    ids      uuid[];
    appended boolean := false;
    streams_out jsonb := '[]';
    first_sid text := NULL;
    first_v  bigint;
    v_reply  jsonb;
    tok      text;
    -- whether any webhook is active: once per group (cqrsd_append_group sets
    -- it for its transaction), else looked up
    hooks    boolean := coalesce(nullif(current_setting('cqrsd.hooks', true), '')::boolean,
                                 EXISTS (SELECT 1 FROM webhooks WHERE active));
BEGIN
    IF current_setting('cqrsd.appender', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'cqrsd_append_streams appends for an appender already registered: call cqrsd_append'
            USING ERRCODE = '25000';
    END IF;
    -- claim the command id first: a concurrent or repeated use of it waits
    -- here for the first one and then fails, before anything is appended
    IF p_command_id IS NOT NULL THEN
        INSERT INTO commands (command_id, request_hash, status, reply)
        VALUES (p_command_id, encode(sha256(convert_to(p_request, 'UTF8')), 'hex'), p_status, '{}');
    END IF;
    FOR i IN 0 .. coalesce(jsonb_array_length(p_batch), 0) - 1 LOOP
        s := p_batch->i;
        sid := s->>'stream';
        evs := s->'events';
        n := jsonb_array_length(evs);
        expected := (s->>'expected')::bigint;
        IF n < 1 THEN
            RAISE EXCEPTION 'no events to append to stream "%"', sid USING ERRCODE = '22023';
        END IF;

        -- idempotent by event id: the whole entry is already stored
        dup := 0;
        IF jsonb_path_exists(evs, '$[*] ? (exists(@.event_id))') THEN
            SELECT array_agg((t.x->>'event_id')::uuid) INTO ids
              FROM jsonb_array_elements(evs) AS t(x)
             WHERE t.x ? 'event_id';
            SELECT count(*), max(version) INTO dup, cur
              FROM events WHERE stream_id = sid AND event_id = ANY (ids);
        END IF;
        IF dup > 0 THEN
            IF dup <> n THEN
                RAISE EXCEPTION 'could not append to stream "%": % of % event ids are already stored', sid, dup, n
                    USING ERRCODE = 'CQ409';
            END IF;
            SELECT cqrsd_position(txid, seq) INTO tok
              FROM events WHERE stream_id = sid AND version = cur;
            newv := cur;
        ELSE
            IF expected = 0 THEN
                INSERT INTO streams (stream_id, category, version)
                VALUES (sid, s->>'category', n)
                ON CONFLICT (stream_id) DO NOTHING
                RETURNING version INTO newv;
                IF newv IS NULL THEN
                    SELECT version INTO cur FROM streams WHERE stream_id = sid;
                    RAISE EXCEPTION 'could not append to stream "%": version conflict (expected no stream, found version %)', sid, cur
                        USING ERRCODE = 'CQ409';
                END IF;
            ELSIF expected > 0 THEN
                UPDATE streams SET version = version + n
                 WHERE stream_id = sid AND version = expected
                RETURNING version INTO newv;
                IF newv IS NULL THEN
                    SELECT version INTO cur FROM streams WHERE stream_id = sid;
                    RAISE EXCEPTION 'could not append to stream "%": version conflict (expected %, found %)', sid, expected,
                        coalesce(cur::text, 'no stream') USING ERRCODE = 'CQ409';
                END IF;
            ELSE
                INSERT INTO streams AS st (stream_id, category, version)
                VALUES (sid, s->>'category', n)
                ON CONFLICT (stream_id) DO UPDATE SET version = st.version + EXCLUDED.version
                RETURNING version INTO newv;
            END IF;

            INSERT INTO events (stream_id, version, event_id, type, data, metadata)
            SELECT sid, newv - n + t.ord,
                   coalesce((t.x->>'event_id')::uuid,
                            CASE WHEN p_command_id IS NULL THEN gen_random_uuid()
                                 ELSE md5(p_command_id || '/' || sid || '/' || t.ord)::uuid END),
                   t.x->>'type', t.x->'data', coalesce(t.x->'metadata', '{}')
              FROM jsonb_array_elements(evs) WITH ORDINALITY AS t(x, ord);
            appended := true;
            -- the outbox: one delivery per active webhook wanting the type
            IF hooks THEN
                INSERT INTO webhook_deliveries (webhook_id, stream_id, version)
                SELECT w.id, e.stream_id, e.version
                  FROM events e JOIN webhooks w ON w.active AND e.type = ANY (w.event_types)
                 WHERE e.stream_id = sid AND e.version > newv - n;
            END IF;
        END IF;
        streams_out := streams_out || jsonb_build_array(jsonb_build_object('stream', sid, 'version', newv));
        IF first_sid IS NULL THEN
            first_sid := sid;
            first_v := newv;
        END IF;
    END LOOP;

    IF first_sid IS NULL THEN
        RAISE EXCEPTION 'empty append batch' USING ERRCODE = '22023';
    END IF;
    IF appended THEN
        tok := cqrsd_position(pg_current_xact_id(), currval('events_seq'));
    END IF;
    v_reply := coalesce(p_reply, '{}') || jsonb_build_object('stream', first_sid, 'version', first_v,
                                                          'streams', streams_out, 'position', tok);
    IF p_command_id IS NOT NULL THEN
        UPDATE commands SET reply = v_reply WHERE command_id = p_command_id;
    END IF;
    RETURN v_reply;
END
$$;

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
-- A member waiting more than 5 s on a lock fails alone (lock_not_available).
-- Each subtransaction that writes takes a subtransaction id; beyond 64 in one
-- transaction every snapshot overflows (PostgreSQL docs §74.3,
-- Subtransactions), so callers send at most 64 commands per call.
CREATE FUNCTION cqrsd_append_group(p_commands jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    c   jsonb;
    out jsonb[] := '{}';
    r   jsonb;
    st  text;
    msg text;
    con text;
BEGIN
    PERFORM cqrsd_register_appender();
    PERFORM set_config('cqrsd.hooks', (EXISTS (SELECT 1 FROM webhooks WHERE active))::text, true);
    -- a command waiting on a lock (a stream row or a command id held outside
    -- this group) fails alone after 5 s (SQLSTATE 55P03, caught below) rather
    -- than holding up the group until the statement timeout cancels it all
    PERFORM set_config('lock_timeout', '5s', true);
    FOR i IN 0 .. coalesce(jsonb_array_length(p_commands), 0) - 1 LOOP
        c := p_commands->i;
        BEGIN
            r := cqrsd_append_streams(c->>'command_id', c->>'request', (c->>'status')::int,
                                      CASE WHEN jsonb_typeof(c->'reply') = 'object' THEN c->'reply' END,
                                      c->'batch');
            out := out || jsonb_build_object('reply', r);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                                    con = CONSTRAINT_NAME;
            out := out || jsonb_build_object('sqlstate', st, 'message', msg,
                                             'constraint', nullif(con, ''));
        END;
    END LOOP;
    PERFORM set_config('cqrsd.hooks', '', true);
    RETURN to_jsonb(out);
END
$$;
