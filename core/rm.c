/* core/rm.c — exactly-once application of projection batches into Redis (see
 * rm.h). The script's ARGV: n, then n triples (checkpoint key, expected,
 * new), then the batch's commands as (argc, args...). It checks every
 * checkpoint before its first write and sets the checkpoints after its last. */
#include "core/rm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/reg.h"
#include "core/util.h"

/* The batch script. Redis runs it atomically but does not undo the writes
 * before a failing one, so it first checks, without writing, that every
 * write will succeed: the checkpoints, each key's type (existing or made by
 * an earlier write of the batch) and every HINCRBY's result (kept below 2^62
 * in magnitude, judged in Lua's doubles with room to spare, so no int64
 * overflow can slip through). Then it writes, then it moves the checkpoints.
 * A refused batch writes nothing. */
/* The key of a projection version's checkpoint (caller frees). */
static char *checkpoint_key(const char *projection, int version)
{
    return xasprintf("cqrsd:checkpoint:%s:v%d", projection, version);
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
    "local function int_of(s) return s:match('^%-?%d+$') and tonumber(s) or 'x' end\n"
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

static const char RESET_LUA[] =
    "local keys = redis.call('KEYS', ARGV[1])\n"
    "for _, k in ipairs(keys) do redis.call('UNLINK', k) end\n"
    "for _, k in ipairs(redis.call('KEYS', ARGV[3])) do redis.call('UNLINK', k) end\n"
    "redis.call('DEL', ARGV[2])\n"
    "return #keys\n";

redisContext *rm_connect(const char *url, int timeout_ms, struct err *e)
{
    char host[256];
    int port = 6379, db = 0;
    if (!url || strncmp(url, "redis://", 8)) {
        err_set(e, ERR_INVALID, "REDIS_URL \"%s\" is not redis://host:port[/db]", url ? url : "");
        return NULL;
    }
    const char *p = url + 8, *at = strchr(p, '@');
    if (at)
        p = at + 1; /* no authentication in this version: credentials ignored */
    size_t hl = strcspn(p, ":/");
    if (hl == 0 || hl >= sizeof host) {
        err_set(e, ERR_INVALID, "REDIS_URL \"%s\" has no host", url);
        return NULL;
    }
    memcpy(host, p, hl);
    host[hl] = '\0';
    p += hl;
    if (*p == ':') {
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1 || v < 1 || v > 65535) {
            err_set(e, ERR_INVALID, "REDIS_URL \"%s\" has a bad port", url);
            return NULL;
        }
        port = (int)v;
        p = end;
    }
    if (*p == '/' && p[1]) {
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (*end || v < 0 || v > 15) {
            err_set(e, ERR_INVALID, "REDIS_URL \"%s\" has a bad database number", url);
            return NULL;
        }
        db = (int)v;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *rc = redisConnectWithTimeout(host, port, tv);
    if (!rc || rc->err) {
        err_set(e, ERR_UNAVAILABLE, "could not connect to Redis at %s:%d: %s", host, port,
                rc ? rc->errstr : "out of memory");
        if (rc)
            redisFree(rc);
        return NULL;
    }
    redisSetTimeout(rc, tv);
    redisEnableKeepAlive(rc);
    if (db) {
        redisReply *r = redisCommand(rc, "SELECT %d", db);
        int ok = r && r->type == REDIS_REPLY_STATUS;
        if (r)
            freeReplyObject(r);
        if (!ok) {
            err_set(e, ERR_UNAVAILABLE, "could not select Redis database %d", db);
            redisFree(rc);
            return NULL;
        }
    }
    return rc;
}

static int lost(redisContext *rc, redisReply *r, const char *what, struct err *e)
{
    if (r)
        freeReplyObject(r);
    return err_set(e, ERR_UNAVAILABLE, "could not %s: %s", what,
                   rc->err ? rc->errstr : "no reply from Redis");
}

/* The SHA1 of APPLY_LUA as Redis names it (SCRIPT LOAD), per thread: loaded
 * once per connection's server, and again after a NOSCRIPT (a restarted or
 * flushed Redis). */
static _Thread_local char apply_sha[41];

int rm_apply(redisContext *rc, const struct fn_batch *b, const struct rm_checkpoint *cps,
             size_t ncps, struct err *e)
{
    size_t argc = 4 + 3 * ncps + b->argc; /* EVALSHA, sha, numkeys, n */
    const char **argv = xmalloc(argc * sizeof *argv);
    char **owned = xmalloc((ncps + 1) * sizeof *owned);
    char n[24];
    size_t k = 0;
    if (!apply_sha[0]) {
        redisReply *l = redisCommand(rc, "SCRIPT LOAD %s", APPLY_LUA);
        if (l && l->type == REDIS_REPLY_STRING && l->len == 40)
            memcpy(apply_sha, l->str, 41);
        if (l)
            freeReplyObject(l);
    }
    argv[k++] = apply_sha[0] ? "EVALSHA" : "EVAL";
    argv[k++] = apply_sha[0] ? apply_sha : APPLY_LUA;
    argv[k++] = "0";
    snprintf(n, sizeof n, "%zu", ncps);
    argv[k++] = n;
    for (size_t i = 0; i < ncps; i++) {
        owned[i] = cps[i].key ? xstrdup(cps[i].key)
                              : checkpoint_key(cps[i].projection, cps[i].version);
        argv[k++] = owned[i];
        argv[k++] = cps[i].from;
        argv[k++] = cps[i].to;
    }
    for (size_t i = 0; i < b->argc; i++)
        argv[k++] = b->argv[i];
    redisReply *r = redisCommandArgv(rc, (int)k, argv, NULL);
    if (r && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8)) {
        freeReplyObject(r); /* the server lost its scripts: send the text, load it again */
        apply_sha[0] = '\0';
        argv[0] = "EVAL";
        argv[1] = APPLY_LUA;
        r = redisCommandArgv(rc, (int)k, argv, NULL);
    }
    for (size_t i = 0; i < ncps; i++)
        free(owned[i]);
    free(owned);
    free(argv);

    if (!r || rc->err)
        return lost(rc, r, "apply a projection batch", e);
    int rcode = 0;
    if (r->type == REDIS_REPLY_ERROR) {
        if (strstr(r->str, "CHECKPOINT "))
            rcode = err_set(e, ERR_CONFLICT, "checkpoint moved: %s", r->str);
        else if (!strncmp(r->str, "LOADING", 7) || !strncmp(r->str, "BUSY", 4))
            rcode = err_set(e, ERR_UNAVAILABLE, "Redis is not ready: %s", r->str);
        else /* REFUSED: nothing was written */
            rcode = err_set(e, ERR_INTERNAL, "projection batch refused by Redis: %s", r->str);
    }
    freeReplyObject(r);
    return rcode;
}

int rm_checkpoint_get(redisContext *rc, const char *projection, int version, char buf[33],
                      struct err *e)
{
    char *key = checkpoint_key(projection, version);
    redisReply *r = redisCommand(rc, "GET %s", key);
    free(key);
    if (!r || rc->err)
        return lost(rc, r, "read a checkpoint", e);
    buf[0] = '\0';
    int code = 0;
    if (r->type == REDIS_REPLY_STRING && r->len == 32)
        memcpy(buf, r->str, 33);
    else if (r->type == REDIS_REPLY_ERROR)
        code = err_set(e, ERR_UNAVAILABLE, "could not read checkpoint of %s: %s", projection, r->str);
    else if (r->type != REDIS_REPLY_NIL)
        code = err_set(e, ERR_INTERNAL, "checkpoint of %s is not a position token", projection);
    freeReplyObject(r);
    return code;
}

int rm_checkpoints_get(redisContext *rc, const struct reg *r, char (*cps)[33], struct err *e)
{
    if (r->nprojs == 0)
        return 0;
    const char **argv = xmalloc((r->nprojs + 1) * sizeof *argv);
    char **keys = xmalloc(r->nprojs * sizeof *keys);
    argv[0] = "MGET";
    for (size_t i = 0; i < r->nprojs; i++) {
        keys[i] = checkpoint_key(r->projs[i].p->name, r->projs[i].p->version);
        argv[i + 1] = keys[i];
    }
    redisReply *rep = redisCommandArgv(rc, (int)r->nprojs + 1, argv, NULL);
    for (size_t i = 0; i < r->nprojs; i++)
        free(keys[i]);
    free(keys);
    free(argv);
    if (!rep || rc->err)
        return lost(rc, rep, "read the checkpoints", e);
    int code = 0;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != r->nprojs) {
        code = err_set(e, rep->type == REDIS_REPLY_ERROR ? ERR_UNAVAILABLE : ERR_INTERNAL,
                       "could not read the checkpoints: %s",
                       rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    } else {
        for (size_t i = 0; i < r->nprojs && !code; i++) {
            const redisReply *v = rep->element[i];
            cps[i][0] = '\0';
            if (v->type == REDIS_REPLY_STRING && v->len == 32)
                memcpy(cps[i], v->str, 33);
            else if (v->type != REDIS_REPLY_NIL)
                code = err_set(e, ERR_INTERNAL, "checkpoint of %s is not a position token",
                               r->projs[i].p->name);
        }
    }
    freeReplyObject(rep);
    return code;
}

int rm_reset(redisContext *rc, const char *projection, int version, long long *deleted,
             struct err *e)
{
    char *pattern = xasprintf("%s:v%d:*", projection, version);
    char *cp = checkpoint_key(projection, version);
    char *markers = xasprintf("cqrsd:parked:%s:v%d:*", projection, version);
    const char *argv[] = {"EVAL", RESET_LUA, "0", pattern, cp, markers};
    redisReply *r = redisCommandArgv(rc, 6, argv, NULL);
    free(pattern);
    free(cp);
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
