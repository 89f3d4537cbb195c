/* core/rm.c — exactly-once application of projection batches into Redis (see
 * rm.h). The script's ARGV: n, then n triples (checkpoint key, expected,
 * new), then the batch's commands as (argc, args...). It checks every
 * checkpoint before its first write and sets the checkpoints after its last. */
#include "core/rm.h"

#include <ctype.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/reg.h"
#include "core/rtime.h"
#include "core/util.h"

/* The batch script. Redis runs it atomically but does not undo the writes
 * before a failing one, so it first checks, without writing, that every
 * write will succeed: the checkpoints, each key's type (existing or made by
 * an earlier write of the batch) and every HINCRBY's result (kept below 2^62
 * in magnitude, judged in Lua's doubles with room to spare, so no int64
 * overflow can slip through). Then it writes, then it moves the checkpoints.
 * A refused batch writes nothing. */
char *rm_keyspace(const char *projection, int version, long build)
{
    return build ? xasprintf("%s:v%d@%ld:", projection, version, build)
                 : xasprintf("%s:v%d:", projection, version);
}

char *rm_checkpoint_key(const char *projection, int version, long build)
{
    return build ? xasprintf("cqrsd:checkpoint:%s:v%d@%ld", projection, version, build)
                 : xasprintf("cqrsd:checkpoint:%s:v%d", projection, version);
}

static char *builds_key(const char *projection, int version)
{
    return xasprintf("cqrsd:builds:%s:v%d", projection, version);
}

static char *live_key(const char *projection, int version)
{
    return xasprintf("cqrsd:live:%s:v%d", projection, version);
}

static const char APPLY_LUA[] =
    "local n = tonumber(ARGV[1])\n"
    "local i = 2\n"
    "for p = 1, n do\n"
    "  local cur = redis.call('GET', ARGV[i]) or ''\n"
    "  if cur ~= ARGV[i + 1] then\n"
    "    return redis.error_reply('CHECKPOINT ' .. ARGV[i] .. ' is \"' .. cur .. '\", batch expected \"' .. ARGV[i + 1] .. '\"')\n"
    "  end\n"
    "  i = i + 3\n"
    "end\n"
    "local first = i\n"
    "local want = {SET='string', HSET='hash', HSETNX='hash', HDEL='hash', HINCRBY='hash',\n"
    "  SADD='set', ZADD='zset', ZINCRBY='zset', ZREMRANGEBYLEX='zset'}\n"
    "local types, ints, deleted, limit = {}, {}, {}, 4611686018427387904\n"
    /* what Redis's string2ll accepts: no sign on 0, no leading zeros */
    "local function int_of(s) return (s == '0' or s:match('^%-?[1-9]%d*$')) and tonumber(s) or 'x' end\n"
    "local function current(key, field, f)\n"
    "  if ints[f] ~= nil then return ints[f] end\n"
    "  if deleted[key] then return 'absent' end\n"
    "  local s = redis.call('HGET', key, field)\n"
    "  if s == false then return 'absent' end\n"
    "  return int_of(s)\n"
    "end\n"
    "local j = first\n"
    "while j <= #ARGV do\n"
    "  local c, cmd, key = tonumber(ARGV[j]), ARGV[j + 1], ARGV[j + 2]\n"
    "  if types[key] == nil then types[key] = redis.call('TYPE', key).ok end\n"
    "  if cmd == 'DEL' then\n"
    "    types[key], deleted[key] = 'none', true\n"
    "    for f in pairs(ints) do if f:sub(1, #key + 1) == key .. '\\0' then ints[f] = nil end end\n"
    "  else\n"
    "    local t = want[cmd]\n"
    "    if t == nil then return redis.error_reply('REFUSED command ' .. cmd .. ' is not a projection write') end\n"
    "    if types[key] ~= 'none' and types[key] ~= t then\n"
    "      return redis.error_reply('REFUSED ' .. cmd .. ' on ' .. key .. ', a ' .. types[key])\n"
    "    end\n"
    "    types[key] = t\n"
    "    if cmd == 'ZREMRANGEBYLEX' then\n"
    "      for a = j + 3, j + 4 do\n"
    "        local s = ARGV[a] or ''\n"
    "        if s ~= '-' and s ~= '+' and s:sub(1, 1) ~= '[' and s:sub(1, 1) ~= '(' then\n"
    "          return redis.error_reply('REFUSED ZREMRANGEBYLEX on ' .. key .. ', a bound is not - + [x or (x')\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    if t == 'hash' then\n"
    "      local field = ARGV[j + 3]\n"
    "      local f = key .. '\\0' .. field\n"
    "      if cmd == 'HINCRBY' then\n"
    "        local cur = current(key, field, f)\n"
    "        if cur == 'x' then\n"
    "          return redis.error_reply('REFUSED HINCRBY on ' .. key .. ' ' .. field .. ', not an integer')\n"
    "        end\n"
    "        local v = (cur == 'absent' and 0 or cur) + tonumber(ARGV[j + 4])\n"
    "        if v >= limit or v <= -limit then\n"
    "          return redis.error_reply('REFUSED HINCRBY on ' .. key .. ' ' .. field .. ' would pass 2^62')\n"
    "        end\n"
    "        ints[f] = v\n"
    "      elseif cmd == 'HSET' then\n"
    "        ints[f] = int_of(ARGV[j + 4])\n"
    "      elseif cmd == 'HSETNX' then\n"
    "        if current(key, field, f) == 'absent' then ints[f] = int_of(ARGV[j + 4]) end\n"
    "      else\n"
    "        ints[f] = 'absent'\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  j = j + c + 1\n"
    "end\n"
    "j = first\n"
    "while j <= #ARGV do\n"
    "  local c = tonumber(ARGV[j])\n"
    "  redis.call(unpack(ARGV, j + 1, j + c))\n"
    "  j = j + c + 1\n"
    "end\n"
    "i = 2\n"
    "for p = 1, n do\n"
    "  redis.call('SET', ARGV[i], ARGV[i + 2])\n"
    "  i = i + 3\n"
    "end\n"
    "return 'OK'\n";

/* ARGV: the keyspace pattern of build 0, of builds >= 1, the checkpoint of
 * build 0, the pattern of the others, the live pointer, the markers, the
 * set of builds. */
static const char RESET_LUA[] =
    "local n = 0\n"
    "for a = 1, 2 do\n"
    "  for _, k in ipairs(redis.call('KEYS', ARGV[a])) do redis.call('UNLINK', k); n = n + 1 end\n"
    "end\n"
    "for _, k in ipairs(redis.call('KEYS', ARGV[4])) do redis.call('UNLINK', k) end\n"
    "for _, k in ipairs(redis.call('KEYS', ARGV[6])) do redis.call('UNLINK', k) end\n"
    "redis.call('DEL', ARGV[3], ARGV[5], ARGV[7])\n"
    "return n\n";

/* ARGV: "<projection>:v<version>" of each projection; returns for each its
 * live build and that build's checkpoint ("" when none). */
static const char READ_LUA[] =
    "local out = {}\n"
    "for i = 1, #ARGV do\n"
    "  local b = redis.call('GET', 'cqrsd:live:' .. ARGV[i]) or '0'\n"
    "  local k = 'cqrsd:checkpoint:' .. ARGV[i]\n"
    "  if b ~= '0' then k = k .. '@' .. b end\n"
    "  out[#out + 1] = b\n"
    "  out[#out + 1] = redis.call('GET', k) or ''\n"
    "end\n"
    "return out\n";

/* ARGV: live pointer, from, to, checkpoint of from, checkpoint of to. */
static const char SWITCH_LUA[] =
    "local live = redis.call('GET', ARGV[1]) or '0'\n"
    "if live ~= ARGV[2] then return redis.error_reply('MOVED the live build is ' .. live) end\n"
    "local old = redis.call('GET', ARGV[4]) or ''\n"
    "local new = redis.call('GET', ARGV[5]) or ''\n"
    "if old == 'retired' or new < old then return redis.status_reply('BEHIND') end\n"
    "redis.call('SET', ARGV[1], ARGV[3])\n"
    "redis.call('SET', ARGV[4], 'retired', 'PX', 86400000)\n"
    "return redis.status_reply('SWITCHED')\n";

/* Percent-decodes s[0..n) into out[cap]; -1 when it does not fit or has a
 * bad escape. */
static int pct_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            unsigned v;
            if (i + 2 >= n || !isxdigit((unsigned char)s[i + 1]) ||
                !isxdigit((unsigned char)s[i + 2]) || sscanf(s + i + 1, "%2x", &v) != 1)
                return -1;
            c = (int)v;
            i += 2;
        }
        if (w + 1 >= cap)
            return -1;
        out[w++] = (char)c;
    }
    out[w] = '\0';
    return 0;
}

int rm_url_parse(const char *url, struct rm_url *u, struct err *e)
{
    memset(u, 0, sizeof *u);
    u->port = 6379;
    /* url as the messages show it: the password masked */
    char shown[300];
    const char *sch = url ? strstr(url, "://") : NULL, *sat = url ? strrchr(url, '@') : NULL;
    const char *scolon = sch && sat && sat > sch + 3 ? memchr(sch + 3, ':', (size_t)(sat - sch - 3)) : NULL;
    if (scolon)
        snprintf(shown, sizeof shown, "%.*s:***%.200s", (int)(scolon - url), url, sat);
    else
        snprintf(shown, sizeof shown, "%.200s", url ? url : "");
    int sentinel = url && !strncmp(url, "redis-sentinel://", 17);
    if (!url || (strncmp(url, "redis://", 8) && !sentinel))
        return err_set(e, ERR_INVALID,
                       "REDIS_URL \"%s\" is not redis://host:port[/db] or "
                       "redis-sentinel://host:port[,host:port...][/db]#master",
                       shown);
    char rest[1024]; /* after the scheme, without the #master of a Sentinel set */
    if (strlen(url + (sentinel ? 17 : 8)) >= sizeof rest)
        return err_set(e, ERR_INVALID, "REDIS_URL \"%s\" is longer than %zu bytes", shown,
                       sizeof rest - 1);
    snprintf(rest, sizeof rest, "%s", url + (sentinel ? 17 : 8));
    if (sentinel) {
        u->sentinel = 1;
        u->port = 26379;
        char *hash = strrchr(rest, '#');
        if (!hash || !hash[1] || strlen(hash + 1) >= sizeof u->master)
            return err_set(e, ERR_INVALID,
                           "REDIS_URL \"%s\" names no master: end it with #<name of the "
                           "Sentinel set's master>",
                           shown);
        snprintf(u->master, sizeof u->master, "%s", hash + 1);
        *hash = '\0';
    }
    const char *p = rest, *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon)
            return err_set(e, ERR_INVALID, "REDIS_URL has a user but no password: write "
                                           "redis://user:password@host (or :password@host)");
        if (pct_decode(p, (size_t)(colon - p), u->user, sizeof u->user) ||
            pct_decode(colon + 1, (size_t)(at - colon - 1), u->password, sizeof u->password))
            return err_set(e, ERR_INVALID, "REDIS_URL has a malformed or too long user or "
                                           "password (percent-encode reserved characters)");
        u->has_password = 1;
        p = at + 1;
    }
    int default_port = u->port;
    for (;;) { /* host[:port], and for a Sentinel set more after commas */
        if (u->nhosts == RM_SENTINELS_MAX)
            return err_set(e, ERR_INVALID, "REDIS_URL \"%s\" names more than %d Sentinels",
                           shown, RM_SENTINELS_MAX);
        size_t hl = strcspn(p, ":/,");
        if (hl == 0 || hl >= sizeof u->host)
            return err_set(e, ERR_INVALID, "REDIS_URL \"%s\" has no host", shown);
        memcpy(u->hosts[u->nhosts].host, p, hl);
        u->hosts[u->nhosts].port = default_port;
        p += hl;
        if (*p == ':') {
            char *end;
            long v = strtol(p + 1, &end, 10);
            if (end == p + 1 || v < 1 || v > 65535 || (*end && *end != '/' && *end != ','))
                return err_set(e, ERR_INVALID, "REDIS_URL \"%s\" has a bad port", shown);
            u->hosts[u->nhosts].port = (int)v;
            p = end;
        }
        u->nhosts++;
        if (*p != ',')
            break;
        if (!sentinel)
            return err_set(e, ERR_INVALID,
                           "REDIS_URL \"%s\" names several hosts: that is a Sentinel set, "
                           "written redis-sentinel://host:port,host:port/db#master",
                           shown);
        p++;
    }
    snprintf(u->host, sizeof u->host, "%s", u->hosts[0].host);
    u->port = u->hosts[0].port;
    if (*p == '/' && p[1]) {
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (*end || end == p + 1 || v < 0 || v > 15)
            return err_set(e, ERR_INVALID,
                           "REDIS_URL \"%s\" has a bad database number: 0 to 15", shown);
        u->db = (int)v;
    } else if (*p && strcmp(p, "/")) {
        return err_set(e, ERR_INVALID, "REDIS_URL \"%s\" is not redis://host:port[/db]", shown);
    }
    return 0;
}

/* Asks Sentinel i of u for the address of its set's master, into
 * u->host/port. Returns 0, or -1 with why (cap bytes) saying what failed. */
static int sentinel_ask(struct rm_url *u, int i, struct timeval tv, char *why, size_t cap)
{
    redisContext *s = redisConnectWithTimeout(u->hosts[i].host, u->hosts[i].port, tv);
    if (!s || s->err) {
        snprintf(why, cap, "Sentinel %s:%d: %s", u->hosts[i].host, u->hosts[i].port,
                 s ? s->errstr : "out of memory");
        if (s)
            redisFree(s);
        return -1;
    }
    redisSetTimeout(s, tv);
    redisReply *r = redisCommand(s, "SENTINEL GET-MASTER-ADDR-BY-NAME %s", u->master);
    int rc = -1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING) {
        snprintf(u->host, sizeof u->host, "%s", r->element[0]->str);
        u->port = atoi(r->element[1]->str);
        rc = 0;
    } else {
        snprintf(why, cap, "Sentinel %s:%d: %s", u->hosts[i].host, u->hosts[i].port,
                 !r                             ? s->errstr
                 : r->type == REDIS_REPLY_ERROR ? r->str
                                                : "it knows no master of that name");
    }
    if (r)
        freeReplyObject(r);
    redisFree(s);
    return rc;
}

/* 0 when the node rc reaches says by ROLE that it is not a master (a
 * replica, or a Sentinel), as a Sentinel's answer may lag a failover by a
 * moment; 1 otherwise. A node that refuses ROLE (NOPERM: an ACL user without
 * it) counts as a master: a replica's READONLY on the first write is
 * transient (rm_error_transient), so the writer comes back through the
 * Sentinels. */
static int is_master(redisContext *rc)
{
    redisReply *r = redisCommand(rc, "ROLE");
    int ok = !r                              ? 0
             : r->type == REDIS_REPLY_ERROR  ? 1
             : r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                 r->element[0]->type == REDIS_REPLY_STRING && !strcmp(r->element[0]->str, "master");
    if (r)
        freeReplyObject(r);
    return ok;
}

/* A connection to u->host:port, authenticated with u's credentials (kept:
 * the caller wipes them). NULL with e set when it fails. */
static redisContext *node_open(const struct rm_url *u, struct timeval tv, struct err *e)
{
    redisContext *rc = redisConnectWithTimeout(u->host, u->port, tv);
    if (!rc || rc->err) {
        err_set(e, ERR_UNAVAILABLE, "could not connect to Redis at %s:%d: %s", u->host, u->port,
                rc ? rc->errstr : "out of memory");
        if (rc)
            redisFree(rc);
        return NULL;
    }
    redisSetTimeout(rc, tv);
    redisEnableKeepAlive(rc);
    if (u->has_password) {
        redisReply *r = *u->user ? redisCommand(rc, "AUTH %s %s", u->user, u->password)
                                 : redisCommand(rc, "AUTH %s", u->password);
        if (!r || r->type != REDIS_REPLY_STATUS) {
            err_set(e, ERR_UNAVAILABLE,
                    "Redis at %s:%d refused the credentials of REDIS_URL: %.200s", u->host,
                    u->port, r && r->type == REDIS_REPLY_ERROR ? r->str : rc->errstr);
            if (r)
                freeReplyObject(r);
            redisFree(rc);
            return NULL;
        }
        freeReplyObject(r);
    }
    return rc;
}

redisContext *rm_connect(const char *url, int timeout_ms, struct err *e)
{
    struct rm_url u;
    if (rm_url_parse(url, &u, e))
        return NULL;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *rc = NULL;
    if (!u.sentinel) {
        rc = node_open(&u, tv, e);
    } else {
        /* each Sentinel in turn, until one names a master that is one: a
         * Sentinel cut off from the others may name the old master */
        char why[1024] = "";
        for (int i = 0; i < u.nhosts && !rc; i++) {
            if (sentinel_ask(&u, i, tv, why, sizeof why))
                continue;
            struct err ne = {0};
            rc = node_open(&u, tv, &ne);
            if (!rc) {
                snprintf(why, sizeof why, "Sentinel %s:%d named %s:%d: %.200s", u.hosts[i].host,
                         u.hosts[i].port, u.host, u.port, ne.msg);
            } else if (!is_master(rc)) {
                snprintf(why, sizeof why,
                         "Sentinel %s:%d named %s:%d, which is not a master (yet): a failover "
                         "is under way",
                         u.hosts[i].host, u.hosts[i].port, u.host, u.port);
                redisFree(rc);
                rc = NULL;
            }
        }
        if (!rc)
            err_set(e, ERR_UNAVAILABLE,
                    "no Sentinel of REDIS_URL named a master of \"%s\" that answers as one (%s)",
                    u.master, why);
    }
    memset(u.password, 0, sizeof u.password);
    if (!rc)
        return NULL;
    if (u.db) {
        redisReply *r = redisCommand(rc, "SELECT %d", u.db);
        int ok = r && r->type == REDIS_REPLY_STATUS;
        if (r)
            freeReplyObject(r);
        if (!ok) {
            err_set(e, ERR_UNAVAILABLE, "could not select Redis database %d", u.db);
            redisFree(rc);
            return NULL;
        }
    }
    return rc;
}

/* 1 when the error at p is code: the code, then a space or the end */
static int code_is(const char *p, const char *code)
{
    size_t n = strlen(code);
    return strncmp(p, code, n) == 0 && (p[n] == ' ' || p[n] == '\0');
}

int rm_error_transient(const char *msg)
{
    /* Redis's error codes for a node that cannot take writes now (it is a
     * replica, or its master is down, or it is loading or busy, or out of
     * memory). An error reply starts with its code; Redis 7 passes the code
     * of a command that failed inside a script on as the reply's own, and
     * Redis 6 wraps it as "ERR Error running script ...: -CODE ...". A code
     * anywhere else is text (a key named in a REFUSED reply), not a code. */
    static const char *const codes[] = {"LOADING",    "BUSY",     "READONLY", "MASTERDOWN",
                                        "NOREPLICAS", "TRYAGAIN", "OOM"};
    static const char wrapped[] = "ERR Error running script";
    if (!msg)
        return 0;
    const char *inner = NULL;
    if (strncmp(msg, wrapped, sizeof wrapped - 1) == 0 && (inner = strstr(msg, ": -")))
        inner += 3;
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++)
        if (code_is(msg, codes[i]) || (inner && code_is(inner, codes[i])))
            return 1;
    return 0;
}

static int lost(redisContext *rc, redisReply *r, const char *what, struct err *e)
{
    if (r)
        freeReplyObject(r);
    return err_set(e, ERR_UNAVAILABLE, "could not %s: %s", what,
                   rc->err ? rc->errstr : "no reply from Redis");
}

/* A script known to Redis by its SHA1 (SCRIPT LOAD), per thread: loaded
 * once per connection's server, and again after a NOSCRIPT (a restarted or
 * flushed Redis). */
struct script {
    const char *text;
    char sha[41];
};
static _Thread_local struct script apply_script = {APPLY_LUA, ""};
static _Thread_local struct script read_script = {READ_LUA, ""};
static _Thread_local struct script switch_script = {SWITCH_LUA, ""};

/* Runs s with the n arguments args (no keys: the scripts name their keys in
 * ARGV, as projection keys are only known at run time), by EVALSHA, or by
 * EVAL when Redis lacks it. Returns the reply (NULL when lost). */
static redisReply *script_run(redisContext *rc, struct script *s, size_t n,
                              const char *const *args)
{
    const char **argv = xmalloc((n + 3) * sizeof *argv);
    if (!s->sha[0]) {
        redisReply *l = redisCommand(rc, "SCRIPT LOAD %s", s->text);
        if (l && l->type == REDIS_REPLY_STRING && l->len == 40)
            memcpy(s->sha, l->str, 41);
        if (l)
            freeReplyObject(l);
    }
    argv[0] = s->sha[0] ? "EVALSHA" : "EVAL";
    argv[1] = s->sha[0] ? s->sha : s->text;
    argv[2] = "0";
    memcpy(argv + 3, args, n * sizeof *argv);
    redisReply *r = redisCommandArgv(rc, (int)n + 3, argv, NULL);
    if (r && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8)) {
        freeReplyObject(r); /* the server lost its scripts: send the text, load it again */
        s->sha[0] = '\0';
        argv[0] = "EVAL";
        argv[1] = s->text;
        r = redisCommandArgv(rc, (int)n + 3, argv, NULL);
    }
    free(argv);
    return r;
}

int rm_apply(redisContext *rc, const struct fn_batch *b, const struct rm_checkpoint *cps,
             size_t ncps, struct err *e)
{
    size_t argc = 1 + 3 * ncps + b->argc;
    const char **argv = xmalloc(argc * sizeof *argv);
    char **owned = xmalloc((ncps + 1) * sizeof *owned);
    char n[24];
    size_t k = 0;
    snprintf(n, sizeof n, "%zu", ncps);
    argv[k++] = n;
    for (size_t i = 0; i < ncps; i++) {
        owned[i] = cps[i].key ? xstrdup(cps[i].key)
                              : rm_checkpoint_key(cps[i].projection, cps[i].version,
                                                  cps[i].build);
        argv[k++] = owned[i];
        argv[k++] = cps[i].from;
        argv[k++] = cps[i].to;
    }
    for (size_t i = 0; i < b->argc; i++)
        argv[k++] = b->argv[i];
    redisReply *r = script_run(rc, &apply_script, k, argv);
    for (size_t i = 0; i < ncps; i++)
        free(owned[i]);
    free(owned);
    free(argv);

    if (!r || rc->err)
        return lost(rc, r, "apply a projection batch", e);
    int rcode = 0;
    if (r->type == REDIS_REPLY_ERROR) {
        if (code_is(r->str, "CHECKPOINT"))
            rcode = err_set(e, ERR_CONFLICT, "checkpoint moved: %s", r->str);
        else if (rm_error_transient(r->str))
            rcode = err_set(e, ERR_UNAVAILABLE, "Redis is not ready: %s", r->str);
        else /* REFUSED: nothing was written */
            rcode = err_set(e, ERR_INTERNAL, "projection batch refused by Redis: %s", r->str);
    }
    freeReplyObject(r);
    return rcode;
}

/* Reads the live build and its checkpoint of the n projection versions
 * names[i] ("<projection>:v<version>") into builds[i] and cps[i]. */
static int read_live(redisContext *rc, size_t n, const char *const *names, long *builds,
                     char (*cps)[33], struct err *e)
{
    redisReply *rep = script_run(rc, &read_script, n, names);
    if (!rep || rc->err)
        return lost(rc, rep, "read the checkpoints", e);
    int code = 0;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 * n) {
        code = err_set(e, rep->type == REDIS_REPLY_ERROR ? ERR_UNAVAILABLE : ERR_INTERNAL,
                       "could not read the checkpoints: %s",
                       rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    } else {
        for (size_t i = 0; i < n && !code; i++) {
            const redisReply *b = rep->element[2 * i], *v = rep->element[2 * i + 1];
            char *end = NULL;
            long build = b->type == REDIS_REPLY_STRING ? strtol(b->str, &end, 10) : -1;
            cps[i][0] = '\0';
            if (build < 0 || !end || *end)
                code = err_set(e, ERR_INTERNAL, "the live build of %s is not a number", names[i]);
            else if (v->type == REDIS_REPLY_STRING && v->len == 32)
                memcpy(cps[i], v->str, 33);
            else if (v->type != REDIS_REPLY_STRING || v->len != 0)
                code = err_set(e, ERR_INTERNAL, "checkpoint of %s is not a position token",
                               names[i]);
            if (builds)
                builds[i] = build;
        }
    }
    freeReplyObject(rep);
    return code;
}

int rm_checkpoint_get(redisContext *rc, const char *projection, int version, char buf[33],
                      long *build, struct err *e)
{
    char *name = xasprintf("%s:v%d", projection, version);
    const char *names[] = {name};
    long b = 0;
    int code = read_live(rc, 1, names, &b, (char(*)[33])buf, e);
    free(name);
    if (build)
        *build = b;
    return code;
}

int rm_checkpoints_get(redisContext *rc, const struct reg *r, char (*cps)[33], long *builds,
                       struct err *e)
{
    if (r->nprojs == 0)
        return 0;
    char **names = xmalloc(r->nprojs * sizeof *names);
    long *b = xcalloc(r->nprojs, sizeof *b);
    for (size_t i = 0; i < r->nprojs; i++)
        names[i] = xasprintf("%s:v%d", r->projs[i].p->name, r->projs[i].p->version);
    int code = read_live(rc, r->nprojs, (const char *const *)names, b, cps, e);
    int64_t now = util_now_ms();
    for (size_t i = 0; i < r->nprojs; i++) {
        free(names[i]);
        struct rm_live *live = r->projs[i].live;
        if (!code && live) {
            atomic_store(&live->build, b[i]);
            atomic_store(&live->checked_ms, now);
            rm_live_raise(live, cps[i], 1);
        }
        if (builds)
            builds[i] = b[i];
    }
    free(names);
    free(b);
    return code;
}

int rm_paused_get(redisContext *rc, const struct reg *r, char (*paused_at)[40], struct err *e)
{
    if (r->nprojs == 0)
        return 0;
    const char **argv = xmalloc((r->nprojs + 2) * sizeof *argv);
    char **names = xmalloc(r->nprojs * sizeof *names);
    argv[0] = "HMGET";
    argv[1] = RM_PAUSED_KEY;
    for (size_t i = 0; i < r->nprojs; i++)
        argv[i + 2] = names[i] = xasprintf("%s:v%d", r->projs[i].p->name, r->projs[i].p->version);
    redisReply *rep = redisCommandArgv(rc, (int)r->nprojs + 2, argv, NULL);
    for (size_t i = 0; i < r->nprojs; i++)
        free(names[i]);
    free(names);
    free(argv);
    if (!rep || rc->err || rep->type != REDIS_REPLY_ARRAY || rep->elements != r->nprojs)
        return lost(rc, rep, "read which projections are paused", e);
    for (size_t i = 0; i < r->nprojs; i++) {
        const redisReply *v = rep->element[i];
        snprintf(paused_at[i], 40, "%.*s", v->type == REDIS_REPLY_STRING ? (int)v->len : 0,
                 v->type == REDIS_REPLY_STRING ? v->str : "");
    }
    freeReplyObject(rep);
    return 0;
}

int rm_pause_set(redisContext *rc, const char *projection, int version, int pause,
                 char at[40], struct err *e)
{
    char field[300], now[RTIME_BUFSZ];
    snprintf(field, sizeof field, "%s:v%d", projection, version);
    rtime_now(now);
    redisReply *r = pause ? redisCommand(rc, "HSETNX %s %s %s", RM_PAUSED_KEY, field, now)
                          : redisCommand(rc, "HDEL %s %s", RM_PAUSED_KEY, field);
    if (!r || rc->err || r->type != REDIS_REPLY_INTEGER)
        return lost(rc, r, pause ? "pause a projection" : "resume a projection", e);
    freeReplyObject(r);
    if (at)
        at[0] = '\0';
    if (!pause || !at)
        return 0;
    r = redisCommand(rc, "HGET %s %s", RM_PAUSED_KEY, field);
    if (!r || rc->err)
        return lost(rc, r, "read when a projection was paused", e);
    if (r->type == REDIS_REPLY_STRING)
        snprintf(at, 40, "%s", r->str);
    freeReplyObject(r);
    return 0;
}

int rm_build_checkpoint_get(redisContext *rc, const char *projection, int version, long build,
                            char buf[33], struct err *e)
{
    char *key = rm_checkpoint_key(projection, version, build);
    redisReply *r = redisCommand(rc, "GET %s", key);
    free(key);
    if (!r || rc->err)
        return lost(rc, r, "read a checkpoint", e);
    buf[0] = '\0';
    int code = 0;
    if (r->type == REDIS_REPLY_STRING && r->len <= 32)
        memcpy(buf, r->str, r->len + 1);
    else if (r->type != REDIS_REPLY_NIL)
        code = err_set(e, ERR_UNAVAILABLE, "could not read checkpoint of %s: %s", projection,
                       r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    freeReplyObject(r);
    return code;
}

int rm_reset(redisContext *rc, const char *projection, int version, long long *deleted,
             struct err *e)
{
    char *pattern = xasprintf("%s:v%d:*", projection, version);
    char *builds = xasprintf("%s:v%d@*", projection, version);
    char *cp = rm_checkpoint_key(projection, version, 0);
    char *cps = xasprintf("%s@*", cp);
    char *live = live_key(projection, version);
    char *markers = xasprintf("cqrsd:parked:%s:v%d:*", projection, version);
    char *set = builds_key(projection, version);
    const char *argv[] = {pattern, builds, cp, cps, live, markers, set};
    redisReply *r = script_run(rc, &(struct script){RESET_LUA, ""}, 7, argv);
    free(set);
    free(pattern);
    free(builds);
    free(cp);
    free(cps);
    free(live);
    free(markers);
    if (!r || rc->err)
        return lost(rc, r, "reset a projection", e);
    int code = 0;
    if (r->type == REDIS_REPLY_INTEGER) {
        if (deleted)
            *deleted = r->integer;
    } else {
        code = err_set(e, ERR_INTERNAL, "could not reset projection %s: %s", projection,
                       r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    }
    freeReplyObject(r);
    return code;
}

int rm_build_register(redisContext *rc, const char *projection, int version, long build,
                      struct err *e)
{
    char *key = builds_key(projection, version);
    redisReply *r = redisCommand(rc, "SADD %s %ld", key, build);
    free(key);
    if (!r || rc->err || r->type == REDIS_REPLY_ERROR)
        return lost(rc, r, "register a build", e);
    freeReplyObject(r);
    return 0;
}

/* UNLINKs every key matching pattern: SCAN MATCH in slices of 5,000, one
 * UNLINK per slice. Adds the keys deleted to *n. */
static int unlink_matching(redisContext *rc, const char *pattern, long long *n, struct err *e)
{
    char cursor[32] = "0";
    int code = 0;
    do {
        redisReply *r = redisCommand(rc, "SCAN %s MATCH %s COUNT 5000", cursor, pattern);
        if (!r || rc->err || r->type != REDIS_REPLY_ARRAY || r->elements != 2)
            return lost(rc, r, "list the keys of a build", e);
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        const redisReply *ks = r->element[1];
        if (ks->elements) {
            const char **argv = xmalloc((ks->elements + 1) * sizeof *argv);
            size_t *lens = xmalloc((ks->elements + 1) * sizeof *lens);
            argv[0] = "UNLINK";
            lens[0] = 6;
            for (size_t i = 0; i < ks->elements; i++) {
                argv[i + 1] = ks->element[i]->str;
                lens[i + 1] = ks->element[i]->len;
            }
            redisReply *u = redisCommandArgv(rc, (int)ks->elements + 1, argv, lens);
            free(argv);
            free(lens);
            if (!u || rc->err || u->type != REDIS_REPLY_INTEGER)
                code = lost(rc, u, "delete the keys of a build", e);
            else
                *n += u->integer;
            if (u && !code)
                freeReplyObject(u);
        }
        freeReplyObject(r);
    } while (!code && strcmp(cursor, "0"));
    return code;
}

int rm_builds_drop(redisContext *rc, const char *projection, int version, long keep,
                   long long *deleted, struct err *e)
{
    long long n = 0;
    char *set = builds_key(projection, version);
    redisReply *m = redisCommand(rc, "SMEMBERS %s", set);
    if (!m || rc->err || m->type != REDIS_REPLY_ARRAY) {
        free(set);
        return lost(rc, m, "read the builds of a projection", e);
    }
    size_t nb = m->elements + 1;
    long *builds = xmalloc(nb * sizeof *builds);
    builds[0] = 0; /* build 0 is never registered: it is where every projection starts */
    for (size_t i = 0; i < m->elements; i++)
        builds[i + 1] = strtol(m->element[i]->str, NULL, 10);
    freeReplyObject(m);
    int code = 0;
    for (size_t i = 0; i < nb && !code; i++) {
        long b = builds[i];
        if (b == keep || (i > 0 && b == 0))
            continue;
        char *space = rm_keyspace(projection, version, b);
        char *pattern = xasprintf("%s*", space);
        char *cp = rm_checkpoint_key(projection, version, b);
        code = unlink_matching(rc, pattern, &n, e);
        /* a retired checkpoint stays until it expires (core/rm.h) */
        redisReply *r = code ? NULL
                             : redisCommand(rc, "EVAL %s 1 %s", "if redis.call('GET', KEYS[1]) "
                                            "~= 'retired' then redis.call('UNLINK', KEYS[1]) end "
                                            "return 0", cp);
        if (!code && (!r || rc->err))
            code = lost(rc, r, "delete the checkpoint of a build", e);
        if (r && !code)
            freeReplyObject(r);
        if (!code && b != 0) {
            r = redisCommand(rc, "SREM %s %ld", set, b);
            if (!r || rc->err)
                code = lost(rc, r, "forget a build", e);
            else
                freeReplyObject(r);
        }
        free(space);
        free(pattern);
        free(cp);
    }
    free(builds);
    free(set);
    if (deleted)
        *deleted = n;
    return code;
}

int rm_switch(redisContext *rc, const char *projection, int version, long from, long to,
              struct err *e)
{
    char *live = live_key(projection, version);
    char f[24], t[24];
    snprintf(f, sizeof f, "%ld", from);
    snprintf(t, sizeof t, "%ld", to);
    char *cpf = rm_checkpoint_key(projection, version, from);
    char *cpt = rm_checkpoint_key(projection, version, to);
    const char *argv[] = {live, f, t, cpf, cpt};
    redisReply *r = script_run(rc, &switch_script, 5, argv);
    free(live);
    free(cpf);
    free(cpt);
    if (!r || rc->err)
        return lost(rc, r, "switch the live build", e);
    /* only the script's own SWITCHED is a switch: anything else (BEHIND, an
     * error, a reply of another shape) leaves the live build serving */
    int code = 0;
    if (r->type == REDIS_REPLY_ERROR)
        code = err_set(e, strncmp(r->str, "MOVED", 5) ? ERR_UNAVAILABLE : ERR_INVALID,
                       "could not switch %s v%d to build %ld: %s", projection, version, to,
                       r->str);
    else if ((r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_STRING) &&
             !strcmp(r->str, "BEHIND"))
        code = err_set(e, ERR_CONFLICT, "build %ld of %s v%d is behind the live build", to,
                       projection, version);
    else if (r->type != REDIS_REPLY_STATUS || strcmp(r->str, "SWITCHED"))
        code = err_set(e, ERR_INTERNAL, "could not switch %s v%d to build %ld: unexpected reply",
                       projection, version, to);
    freeReplyObject(r);
    return code;
}

struct rm_live *rm_live_new(void)
{
    struct rm_live *l = xcalloc(1, sizeof *l);
    pthread_mutex_init(&l->mu, NULL);
    return l;
}

void rm_live_free(struct rm_live *live)
{
    if (!live)
        return;
    pthread_mutex_destroy(&live->mu);
    free(live);
}

void rm_live_raise(struct rm_live *live, const char *cp, int from_redis)
{
    if (!live || !cp || !*cp)
        return;
    pthread_mutex_lock(&live->mu);
    if (strcmp(cp, live->checkpoint) > 0)
        snprintf(live->checkpoint, sizeof live->checkpoint, "%s", cp);
    pthread_mutex_unlock(&live->mu);
    if (from_redis)
        atomic_store(&live->checkpoint_ms, util_now_ms());
}

long long rm_live_checkpoint(struct rm_live *live, char buf[33])
{
    buf[0] = '\0';
    if (!live)
        return 0;
    pthread_mutex_lock(&live->mu);
    memcpy(buf, live->checkpoint, 33);
    pthread_mutex_unlock(&live->mu);
    return atomic_load(&live->checkpoint_ms);
}

long rm_live_build(redisContext *rc, const char *projection, int version, struct rm_live *live)
{
    if (!live)
        return 0;
    int64_t now = util_now_ms();
    int idle = 0;
    if (rc && now - atomic_load(&live->checked_ms) > RM_LIVE_REFRESH_MS &&
        atomic_compare_exchange_strong(&live->refreshing, &idle, 1)) {
        char *key = live_key(projection, version);
        redisReply *r = redisCommand(rc, "GET %s", key);
        free(key);
        if (r && !rc->err && (r->type == REDIS_REPLY_NIL || r->type == REDIS_REPLY_STRING)) {
            char *end = NULL;
            long b = r->type == REDIS_REPLY_NIL ? 0 : strtol(r->str, &end, 10);
            if (b >= 0 && (!end || !*end)) {
                atomic_store(&live->build, b);
                atomic_store(&live->checked_ms, now);
            }
        }
        if (r)
            freeReplyObject(r);
        atomic_store(&live->refreshing, 0);
    }
    return atomic_load(&live->build);
}
