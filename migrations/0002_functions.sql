-- 0002_functions.sql — what the platform keeps for the functions that handle
-- events (core/react.c, core/proj.c): the checkpoints of reactors and timer
-- schedulers, the timers they set, and the events a function could not
-- handle (parked).

-- The position each reactor ("reactor:<name>") and each timer's scheduler
-- ("timer:<name>") has handled the global stream up to. A move is a
-- compare-and-set on position, so two instances never both move one.
CREATE TABLE consumer_checkpoints (
    consumer   text PRIMARY KEY CHECK (octet_length(consumer) BETWEEN 1 AND 200),
    position   text NOT NULL DEFAULT '' CHECK (position = '' OR position ~ '^[0-9a-f]{32}$'),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A timer: timer function `timer` is due to fire for `timer_key` at due_at.
-- schedule_id is new at every start, so the idempotency keys of the commands
-- a fire issues are those of this schedule: a fire run again after a crash
-- issues nothing twice, and a restarted timer is a new schedule.
-- An instance firing a timer claims it until claimed_until (no transaction
-- stays open while the function runs: an open transaction would hold back
-- the global order of every reader).
CREATE TABLE timers (
    timer         text NOT NULL,
    timer_key     text NOT NULL CHECK (octet_length(timer_key) BETWEEN 1 AND 512),
    due_at        timestamptz NOT NULL,
    payload       jsonb NOT NULL DEFAULT '{}',
    schedule_id   uuid NOT NULL,
    set_by        text NOT NULL,          -- position of the event that started it
    claimed_until timestamptz,
    attempts      int NOT NULL DEFAULT 0, -- failed fires of this schedule
    last_error    text,
    PRIMARY KEY (timer, timer_key)
);
CREATE INDEX timers_due ON timers (due_at);

-- What a function failed on after its retries: an event (projection,
-- reactor, timer scheduler) or a due timer (kind 'timer', subject = the
-- timer). `subject` holds what is needed to run it again; `token` is new at
-- every parking, and names the Redis marker that makes the re-application of
-- a projection's event happen once.
CREATE TABLE parked (
    id         bigserial PRIMARY KEY,
    function   text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('projection', 'reactor', 'timer')),
    version    int NOT NULL DEFAULT 0,   -- a projection's version; 0 otherwise
    position   text NOT NULL DEFAULT '', -- the event's; '' for a due timer
    subject    jsonb NOT NULL,
    error      text NOT NULL,
    attempts   int NOT NULL,
    state      text NOT NULL DEFAULT 'parked' CHECK (state IN ('parked', 'resolved')),
    token      uuid NOT NULL DEFAULT gen_random_uuid(),
    parked_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz
);
CREATE UNIQUE INDEX parked_event ON parked (function, version, position) WHERE position <> '';
CREATE INDEX parked_state ON parked (state, id);
