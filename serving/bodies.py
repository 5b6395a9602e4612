"""Bounds on the work a request body can cause: keys, objects and errors, checked in O(n).

A 2 MB body is parsed on the event loop, so whatever it holds must cost time linear in its
size and small in absolute terms, and its answer must be small: `/healthz` waits behind it.
pydantic already refuses unknown fields, but it reads a repeated key silently (keeping the
last copy) and reports one error per unknown key, and turning 180,000 errors into Python
takes ~0.4 s. So a body that looks unusual is first read once by `shape_problem`, which
stops at the first object breaking a bound; only then are pydantic's errors converted.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

MAX_KEYS = 32  # keys in one JSON object; a request has 4, its order 10
MAX_OBJECTS = 4_096  # JSON objects in one body; a full batch of 1,000 holds 2,001
MAX_ERRORS = 10  # errors reported for one body or one batch item; then one "more" entry

_QUOTE_SPACE = re.compile(rb'"\s')


def may_repeat_keys(raw: bytes, keys: int) -> bool:
    """False only when `raw`, valid JSON with `keys` distinct keys, cannot repeat one (~2 us).

    Without a backslash, a `"` in JSON always opens or closes a string, so `":` is a key's
    closing quote and its colon; with no whitespace right after any quote (so none between a
    key and its colon), the count of `":` is the count of keys, and a repeated key makes it
    larger than `keys`. Compact JSON, as clients send it, passes; anything else is looked at
    (`keys=-1`: always).
    """
    return b"\\" in raw or _QUOTE_SPACE.search(raw) is not None or raw.count(b'":') != keys


class _Refused(Exception):
    def __init__(self, detail: dict[str, Any]) -> None:
        super().__init__(detail["msg"])
        self.detail = detail


def _ignore(text: str) -> None:
    return None


def shape_problem(raw: bytes) -> dict[str, Any] | None:
    """The 422 detail for a body that breaks a bound on its objects, else None.

    Refused: a key repeated in one object (JSON parsers disagree on which copy wins, so
    `{"is_virtual": true, "is_virtual": false}` could be approved here and read as virtual
    by a gateway or a log), an object with more than MAX_KEYS keys, a body with more than
    MAX_OBJECTS objects, and a body Python's JSON parser cannot read (the caller asks
    pydantic first, which names a syntax error better). One pass with a set per object,
    stopped at the first problem: ~0.1 s for 2 MB, ~15 us for one request.
    """
    objects = 0

    def check(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal objects
        objects += 1
        if objects > MAX_OBJECTS:
            raise _Refused(_detail([], f"more than {MAX_OBJECTS} objects", "too_many_objects"))
        if len(pairs) > MAX_KEYS:
            raise _Refused(
                _detail([], f"an object with more than {MAX_KEYS} keys", "too_many_keys")
            )
        held = dict(pairs)
        if len(held) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    raise _Refused(_detail([key], "key repeated in one object", "duplicate_key"))
                seen.add(key)
        return held

    try:
        # Numbers are not converted: a 5,000-digit integer is valid JSON (and pydantic
        # takes it in a field of any type) but over Python's int-conversion limit.
        json.loads(
            raw,
            object_pairs_hook=check,
            parse_int=_ignore,
            parse_float=_ignore,
            parse_constant=_ignore,
        )
    except _Refused as refused:
        return refused.detail
    except (ValueError, RecursionError):
        return _detail([], "not JSON this service can read", "json_invalid")
    return None


def _detail(loc: list[str], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": ["body", *loc], "msg": msg, "type": kind}


def field_errors(exc: ValidationError, prefix: tuple = ()) -> list[dict[str, Any]]:
    """pydantic's errors as the API shows them, at most MAX_ERRORS and one entry saying how
    many more. Call it on a body `shape_problem` passed, or whose `exc.error_count()` is
    small: converting every error of a body with 100,000 unknown keys takes ~0.3 s."""
    errors = [
        {"loc": [*prefix, *err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False)[:MAX_ERRORS]
    ]
    more = exc.error_count() - MAX_ERRORS
    if more > 0:
        errors.append(
            {"loc": list(prefix), "msg": f"{more} more errors", "type": "too_many_errors"}
        )
    return errors
