#!/usr/bin/env python3
"""tests/http/check_openapi.py URL RECORD — checks the real replies of the API
tests (RECORD: JSON lines {method, path, status, content_type, body} that
tests/http/test_api.c writes) against the server's GET URL/openapi.json
(OpenAPI 3.1, https://spec.openapis.org/oas/v3.1.0): each exchange's route
and method are in the document (else it was answered 404 or 405), its status
is one of the operation's responses, its body validates against that
response's schema (JSON Schema 2020-12, python3-jsonschema), and every
problem type seen resolves to a page (GET it: 200 text/html).
Exit 0 when all hold; else lists what does not."""
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

import jsonschema


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def main():
    base, record = sys.argv[1], sys.argv[2]
    status, ctype, text = get(base + "/openapi.json")
    if status != 200 or not ctype.startswith("application/json"):
        sys.exit(f"GET /openapi.json: {status} {ctype}")
    doc = json.loads(text)
    if doc.get("openapi") != "3.1.0" or not doc.get("paths"):
        sys.exit("not an OpenAPI 3.1.0 document with paths")
    templates = []
    for tpl, item in doc["paths"].items():
        segs = tpl.strip("/").split("/") if tpl != "/" else []
        rx = "^/" + "/".join("[^/]+" if s.startswith("{") else re.escape(s) for s in segs) + "$"
        literal = sum(1 for s in segs if not s.startswith("{"))
        templates.append((re.compile(rx), literal, tpl, item))
    resolver = jsonschema.RefResolver.from_schema(doc)
    problems_seen, bad, checked, ops = set(), [], 0, set()
    with open(record) as f:
        lines = [json.loads(l) for l in f if l.strip()]
    for x in lines:
        path = urllib.parse.unquote(x["path"].split("?", 1)[0], errors="replace")
        method = x["method"].lower()
        st = str(x["status"])
        body = None
        if x["content_type"].split(";")[0].strip() in ("application/json", "application/problem+json"):
            try:
                body = json.loads(x["body"])
            except ValueError:
                bad.append(f"{x['method']} {x['path']}: {st} body is not JSON: {x['body'][:120]}")
                continue
        if isinstance(body, dict) and isinstance(body.get("type"), str) and body["type"].startswith("/problems/"):
            problems_seen.add(body["type"])
        matches = sorted((t for t in templates if t[0].match(path)), key=lambda t: -t[1])
        checked += 1
        if not matches:
            if st not in ("404", "400"):
                bad.append(f"{x['method']} {x['path']}: {st}, but the document has no such path")
            continue
        _, _, tpl, item = matches[0]
        op = item.get(method)
        if op is None:
            if st != "405" and not (st in ("404", "400") and len(matches) > 0):
                bad.append(f"{x['method']} {x['path']}: {st}, but {tpl} has no {method}")
            continue
        ops.add(f"{method.upper()} {tpl}")
        resp = op["responses"].get(st) or op["responses"].get("default")
        if resp is None:
            bad.append(f"{x['method']} {x['path']} ({method.upper()} {tpl}): status {st} is not "
                       f"among {sorted(op['responses'])}: {x['body'][:160]}")
            continue
        if body is None or method == "head":
            continue
        media = x["content_type"].split(";")[0].strip()
        content = resp.get("content", {})
        if media not in content:
            bad.append(f"{x['method']} {x['path']}: {st} {media} is not among {sorted(content)}")
            continue
        schema = content[media].get("schema")
        if schema is None:
            continue
        try:
            jsonschema.Draft202012Validator(schema, resolver=resolver).validate(body)
        except jsonschema.ValidationError as e:
            bad.append(f"{x['method']} {x['path']}: {st} body does not match its schema: "
                       f"{e.message[:200]}")
    for t in sorted(problems_seen):
        s, c, page = get(base + t)
        if s != 200 or not c.startswith("text/html") or "<h1>" not in page:
            bad.append(f"problem type {t}: GET answered {s} {c}")
    print(f"check_openapi: {checked} exchanges of the API tests, {len(ops)} operations, "
          f"{len(problems_seen)} problem types ({', '.join(sorted(problems_seen))})")
    if checked < 100:
        bad.append(f"only {checked} exchanges recorded: did test_api run with CQRSD_API_RECORD?")
    if bad:
        print(f"check_openapi: {len(bad)} mismatches:", file=sys.stderr)
        for b in bad[:40]:
            print("  " + b, file=sys.stderr)
        sys.exit(1)
    print("check_openapi: passed")


if __name__ == "__main__":
    main()
