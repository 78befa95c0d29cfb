"""Listing a participant's records a page at a time, by saga_id.

Keyset paging (`WHERE saga_id > last`), not offsets: a page never skips or
repeats a record when other sagas are written between two pages, which
matters to `minisaga audit` walking a live system. The page token is the last
saga_id of the page, base64url-encoded: opaque to callers, parsed strictly,
and never echoed back in an error.
"""

from __future__ import annotations

import base64
import binascii
import sqlite3
from dataclasses import dataclass

from service_kit.errors import FieldViolation, invalid_argument
from service_kit.validation import check_saga_id

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_TOKEN_LENGTH = 64  # a UUID's 36 characters make 48 in base64


@dataclass(frozen=True)
class Page:
    size: int
    after: str
    """The saga_id the previous page ended on; "" for the first page."""


def page(page_size: int, page_token: str) -> Page:
    """The page a List request asks for; INVALID_ARGUMENT naming the bad field."""
    if page_size < 0:
        raise invalid_argument(FieldViolation("page_size", "must not be negative"))
    return Page(min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE), _after(page_token))


def _after(token: str) -> str:
    if not token:
        return ""
    bad = invalid_argument(FieldViolation("page_token", "not a page token this service gave out"))
    if len(token) > MAX_TOKEN_LENGTH:
        raise bad
    try:
        saga_id = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise bad from None
    if check_saga_id("page_token", saga_id) is not None or _token(saga_id) != token:
        raise bad
    return saga_id


def _token(saga_id: str) -> str:
    return base64.urlsafe_b64encode(saga_id.encode("ascii")).decode("ascii").rstrip("=")


def select(conn: sqlite3.Connection, table: str, wanted: Page) -> tuple[list[sqlite3.Row], str]:
    """One page of `table` (a constant of the caller's, never input) and the next token."""
    rows = conn.execute(
        f"SELECT * FROM {table} WHERE saga_id > ? ORDER BY saga_id LIMIT ?",
        (wanted.after, wanted.size + 1),
    ).fetchall()
    more = len(rows) > wanted.size
    rows = rows[: wanted.size]
    return rows, _token(rows[-1]["saga_id"]) if more else ""
