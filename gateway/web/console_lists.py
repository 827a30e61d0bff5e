"""What the console's list pages (suppressions, consents) share: reading a form's text
fields and the search box, and the paging cursor in their links.

A list can hold millions of rows, so a page is read from the store after the previous
page's last key (keyset paging); the link to the next page carries that key as an opaque
cursor.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence

from gateway.web.admin import ParameterError
from gateway.web.console import Form

PAGE_SIZE = 50
MAX_SEARCH = 320
"""As long as an email address may be, and longer than any number."""
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
FORM_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
"""Refused in a search and in a form's text (where a typed line break or tab may stay): a
NUL in a reason or a search was stored or searched on SQLite and was a 503 ("try again")
on PostgreSQL, whose text cannot hold it, however often it was retried."""


def text_field(form: Form, name: str, limit: int, *, required: bool = True) -> str:
    """A form field as typed, stripped; refused (naming the field) when missing or empty
    while `required`, longer than `limit` characters, or an uploaded file."""
    value = form.get(name, "")
    if not isinstance(value, str):
        raise ParameterError(name, "must be text, not a file")
    value = value.strip()
    if required and not value:
        raise ParameterError(name, "required")
    if len(value) > limit:
        raise ParameterError(name, f"longer than {limit} characters")
    if FORM_CONTROL.search(value):
        raise ParameterError(name, "must not contain control characters")
    return value


def search_text(query: Mapping[str, str]) -> str:
    """The search box (`q`); empty lists everything."""
    text = query.get("q", "").strip()
    if len(text) > MAX_SEARCH:
        raise ParameterError("q", f"longer than {MAX_SEARCH} characters")
    if CONTROL.search(text):
        raise ParameterError("q", "must not contain control characters")
    return text


def encode_cursor(key: Sequence[str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode("ascii")


def decode_cursor(query: Mapping[str, str], size: int) -> list[str] | None:
    """The `after` cursor of a page link: `size` strings, or None on the first page."""
    cursor = query.get("after")
    if not cursor:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (UnicodeError, binascii.Error, ValueError):
        key = None
    if not (isinstance(key, list) and len(key) == size
            and all(isinstance(k, str) and not CONTROL.search(k) for k in key)):
        raise ParameterError("after", "not a page link this console gave out")
    return key


def added_counts(query: Mapping[str, str]) -> tuple[int, int] | None:
    """(recorded, new) from the link a change redirected to (post/redirect/get): the
    confirmation is built from these numbers only, so a link cannot make it say more."""
    count, new = query.get("n", ""), query.get("new", "")
    if query.get("done") != "added" or not (count.isdigit() and new.isdigit()):
        return None
    if len(count + new) > 12:
        return None
    return int(count), int(new)
