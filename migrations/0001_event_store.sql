-- 0001_event_store.sql — streams, events, commands: the event store (DESIGN.md §3).
--
-- streams is the optimistic-concurrency anchor: an append is a compare-and-set
-- on streams.version (or an INSERT for a new stream). events carries the
-- global order as the pair (txid, seq): the appending transaction's id and a
-- sequence number. Readers of the global stream read pairs below the xmin of
-- their snapshot, so an event committed late is never skipped.

CREATE TABLE streams (
    stream_id text PRIMARY KEY CHECK (octet_length(stream_id) BETWEEN 1 AND 512),
    category  text NOT NULL,
    version   bigint NOT NULL CHECK (version >= 1)
);

CREATE SEQUENCE events_seq AS bigint;

CREATE TABLE events (
    txid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    seq         bigint NOT NULL DEFAULT nextval('events_seq'),
    stream_id   text NOT NULL REFERENCES streams (stream_id),
    version     bigint NOT NULL CHECK (version >= 1),
    event_id    uuid NOT NULL,
    type        text NOT NULL CHECK (octet_length(type) BETWEEN 1 AND 200),
    data        jsonb NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, version),
    UNIQUE (stream_id, event_id)
);
CREATE UNIQUE INDEX events_position ON events (txid, seq);

-- A command id is the client's Idempotency-Key: stored in the transaction
-- that appends the command's events, with the reply the client was given.
CREATE TABLE commands (
    command_id   text PRIMARY KEY CHECK (octet_length(command_id) BETWEEN 1 AND 255),
    request_hash text NOT NULL,
    status       int NOT NULL,
    reply        jsonb NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);

-- The global position of an event as one opaque, fixed-width token that sorts
-- like the pair: 16 hex digits of txid, 16 of seq.
CREATE FUNCTION cqrsd_position(p_txid xid8, p_seq bigint) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT lpad(to_hex(p_txid::text::bigint), 16, '0') || lpad(to_hex(p_seq), 16, '0') $$;

-- cqrsd_append appends the events of one command to one or more streams, in
-- the caller's transaction, atomically.
--
-- p_batch: [{"stream": "cart-1", "category": "cart", "expected": E,
--            "events": [{"type": "...", "data": {...}, "metadata": {...},
--                        "event_id": "uuid" (optional)}]}]
--   E = -1 any version, 0 the stream must not exist, N >= 1 exactly N.
-- When every event of a stream entry carries an event_id that the stream
-- already holds at consecutive versions, that entry was appended before: it is
-- not appended again and reports the version it had (idempotent by event id).
-- p_command_id (nullable) and p_request: the Idempotency-Key and the request
-- it came with; stored in commands with the reply, in this transaction.
-- Returns the reply: p_reply plus stream, version (of the first entry),
-- streams [{stream, version}] and position (the token of the last event).
-- It does not NOTIFY: a NOTIFY serialises the commits of every transaction
-- that sends one (PostgreSQL docs, NOTIFY), so appenders poke a notifier that
-- sends at most one wake-up per few milliseconds (core/proj.c).
-- Raises SQLSTATE CQ409 on a version conflict; a concurrent use of the same
-- command id raises unique_violation on commands_pkey.
CREATE FUNCTION cqrsd_append(p_command_id text, p_request text, p_status int,
                             p_reply jsonb, p_batch jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    s        jsonb;
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
BEGIN
    -- claim the command id first: a concurrent or repeated use of it waits
    -- here for the first one and then fails, before anything is appended
    IF p_command_id IS NOT NULL THEN
        INSERT INTO commands (command_id, request_hash, status, reply)
        VALUES (p_command_id, encode(sha256(convert_to(p_request, 'UTF8')), 'hex'), p_status, '{}');
    END IF;
    FOR s IN SELECT x FROM jsonb_array_elements(p_batch) AS t(x) LOOP
        sid := s->>'stream';
        n := jsonb_array_length(s->'events');
        expected := (s->>'expected')::bigint;
        IF n < 1 THEN
            RAISE EXCEPTION 'no events to append to stream "%"', sid USING ERRCODE = '22023';
        END IF;

        -- idempotent by event id: the whole entry is already stored
        SELECT array_agg((t.x->>'event_id')::uuid) INTO ids
          FROM jsonb_array_elements(s->'events') AS t(x)
         WHERE t.x ? 'event_id';
        dup := 0;
        IF ids IS NOT NULL THEN
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
              FROM jsonb_array_elements(s->'events') WITH ORDINALITY AS t(x, ord);
            appended := true;
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
