-- 0003_webhooks.sql — webhooks to third-party services, delivered from an
-- outbox (core/hook.c).
--
-- A webhook is a URL and the event types it wants. cqrsd_append writes one
-- row of webhook_deliveries per event and active webhook wanting its type in
-- the append's own transaction: an event is never delivered without being
-- stored, nor stored without its deliveries. A deliverer claims due rows
-- (claimed_until, a short UPDATE ... FOR UPDATE SKIP LOCKED: no transaction
-- stays open while a receiver answers), POSTs the event signed with the
-- webhook's secret, and records the outcome: delivered, or a retry after a
-- back-off, or parked after the last attempt (it can be retried by hand).
-- At least once: a deliverer dying between the POST and its record sends
-- again; receivers drop duplicates by the event id.

CREATE TABLE webhooks (
    id          bigserial PRIMARY KEY,
    url         text NOT NULL CHECK (url ~ '^https?://[^[:space:][:cntrl:]]+$'
                                     AND octet_length(url) <= 2000),
    event_types text[] NOT NULL CHECK (cardinality(event_types) BETWEEN 1 AND 100),
    secret      text NOT NULL,
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    webhook_id      bigint NOT NULL REFERENCES webhooks (id),
    stream_id       text NOT NULL,
    version         bigint NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'parked')),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claimed_until   timestamptz,
    last_status     int,            -- the receiver's HTTP status; NULL: no answer
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    FOREIGN KEY (stream_id, version) REFERENCES events (stream_id, version)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_of ON webhook_deliveries (webhook_id, id);

-- cqrsd_append as in 0001, with the outbox.
CREATE OR REPLACE FUNCTION cqrsd_append(p_command_id text, p_request text, p_status int,
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
    hooks    boolean := EXISTS (SELECT 1 FROM webhooks WHERE active);
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
