"""Structured logs: one JSON object per line on stderr.

Callers pass fields, never whole bodies or secrets; `secret`-like field names are refused
at the source so a careless call cannot leak a credential. With encryption at rest on, a
person is logged as their keyed pseudonym: the `recipient` fields at any depth, and any
address or number quoted in a line's text. Logs are shipped to systems the store's
encryption does not cover, and an operator tracing one person needs only to match their
lines (`keys log-pseudonym` gives the value to search for).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import unicodedata
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

FORBIDDEN_FIELDS = frozenset({"secret", "password", "auth_token", "token_key", "body"})
PERSONAL_FIELDS = frozenset({"recipient", "recipients"})
"""Fields that name people: every text in them is logged as its pseudonym while one is in
use, whatever its shape (a number that did not parse too)."""
ID_FIELDS = frozenset({"gateway_id", "upstream_id"})
"""Ids a provider's trace is searched by, left as they are: a Message-ID holds an '@'."""
ADDRESS_DOMAIN = re.compile(r"@[\w-]+(?:\.[\w-]+)+")
"""Where an email address quoted in an ASCII text ends; its local part is read back from
the '@' (`_local_part_start`). A regex for the whole address is tried at every position of
a text, and rescans each word from each of its letters (quadratic on a long token)."""
DOTS = ".\u3002\uff0e\uff61"
"""What separates a domain's labels: the full stop, and the ideographic, fullwidth and
halfwidth ones IDNA reads as it."""
LABEL_DOT = re.compile(f"[{DOTS}]")
KEPT_PUNCTUATION = frozenset("\u00b7\u05f3\u05f4\u30fb")
"""Punctuation IDNA allows inside a label (middle dots, Hebrew geresh and gershayim)."""
LOCAL_PART_SYMBOLS = frozenset("_.!#$%&*+=?^`{|}~-")
"""With letters and digits, what a local part is taken to hold: atext but the quote around
a Python repr and the '/' of a path."""
PERSONAL_NUMBER = re.compile(r"\+[0-9]{7,}")
"""An E.164 number, or a longer run of digits after '+'."""

Pseudonym = Callable[[str], str]
_pseudonym: Pseudonym | None = None


def use_pseudonyms(pseudonym: Pseudonym | None) -> None:
    """From now on, every person this process logs is named by `pseudonym` (None: as they
    are). Set by the services once the data keys are read."""
    global _pseudonym
    _pseudonym = pseudonym


def _pseudonymised(value: Any, pseudonym: Pseudonym, personal: bool = False) -> Any:
    """Every text under a personal field as its pseudonym; in every other text (a provider's
    refusal, a store error, a request path, a traceback), each address or number quoted."""
    if type(value) is str:  # most values: before the ABC checks, which cost more
        if personal:
            return pseudonym(value) if value else value
        return _quoted_people_pseudonymised(value, pseudonym)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict | Mapping):
        return _pseudonymised_fields(value, pseudonym, personal)
    if isinstance(value, list | tuple | set | frozenset):
        return [_pseudonymised(item, pseudonym, personal) for item in value]
    return _pseudonymised(str(value), pseudonym, personal)


def _pseudonymised_fields(
    fields: Mapping[str, Any], pseudonym: Pseudonym, personal: bool = False
) -> dict[str, Any]:
    """A mapping's values through `_pseudonymised`, a flat text checked inline: every
    message logs a line of them."""
    named: dict[str, Any] = {}
    for key, value in fields.items():
        if key in ID_FIELDS:
            named[key] = value
        elif personal or key in PERSONAL_FIELDS or type(value) is not str:
            named[key] = _pseudonymised(value, pseudonym, personal or key in PERSONAL_FIELDS)
        elif "@" in value or "+" in value:
            named[key] = _quoted_people_pseudonymised(value, pseudonym)
        else:
            named[key] = value
    return named


def _quoted_people_pseudonymised(text: str, pseudonym: Pseudonym) -> str:
    if "@" in text:
        text = (_ascii_addresses_pseudonymised(text, pseudonym) if text.isascii()
                else _addresses_pseudonymised(text, pseudonym))
    if "+" in text:
        text = PERSONAL_NUMBER.sub(lambda found: pseudonym(found.group()), text)
    return text


def _ascii_addresses_pseudonymised(text: str, pseudonym: Pseudonym) -> str:
    pieces, done = [], 0
    for domain in ADDRESS_DOMAIN.finditer(text):
        start = _local_part_start(text, domain.start(), done)
        if start < domain.start():
            pieces += [text[done:start], pseudonym(text[start : domain.end()])]
            done = domain.end()
    return "".join(pieces) + text[done:]


def _addresses_pseudonymised(text: str, pseudonym: Pseudonym) -> str:
    """Beyond ASCII, `\\w` misses what addresses hold (combining marks, joiners, a middle
    dot, an emoji) and a domain's dot may be a wide one, so each '@' is read by hand: the
    domain runs to the first white space, punctuation, other '@' or second dot in a row,
    less a sentence's final dot. A domain right after the previous address (a letter used
    as a separator took its local part) is named too, rather than left in clear."""
    pieces, done, at = [], 0, text.find("@")
    while at != -1:
        end = at + 1
        while end < len(text) and (
            _in_domain(text[end]) or (text[end] in DOTS and text[end - 1] not in DOTS)
        ):
            end += 1
        while text[end - 1] in DOTS:
            end -= 1
        labels = LABEL_DOT.split(text[at + 1 : end])
        start = _local_part_start(text, at, done)
        if len(labels) > 1 and all(labels) and (start < at or (pieces and at == done)):
            pieces += [text[done:start], pseudonym(text[start:end])]
            done = end
        at = text.find("@", max(end, at + 1))
    return "".join(pieces) + text[done:]


def _in_domain(char: str) -> bool:
    if char.isascii():
        return char.isalnum() or char in "-_"
    return _in_word(char)


def _in_word(char: str) -> bool:
    """Beyond ASCII: anything but white space and punctuation (but what IDNA allows)."""
    return char in KEPT_PUNCTUATION or (
        not char.isspace() and unicodedata.category(char)[0] not in "PZ"
    )


QUOTED_LOCAL_PART_MAX = 66
"""A quoted local part's 64 octets and its two quotes."""


def _local_part_start(text: str, at: int, done: int) -> int:
    """A quoted local part (`"john doe"@…`, which the gateway accepts) is taken whole,
    from its opening quote on the same line."""
    if at > done and text[at - 1] == '"':
        opening = text.rfind('"', max(done, at - 1 - QUOTED_LOCAL_PART_MAX), at - 1)
        if opening != -1 and "\n" not in text[opening:at]:
            return opening
    start = at
    while start > done and (
        text[start - 1].isalnum()
        or text[start - 1] in LOCAL_PART_SYMBOLS
        or (not text[start - 1].isascii() and _in_word(text[start - 1]))
        or _inner_apostrophe(text, start - 1, done)
    ):
        start -= 1
    return start


def _inner_apostrophe(text: str, index: int, done: int) -> bool:
    """`o'brien@…`: an apostrophe between letters is part of a local part; one after a
    space, a bracket or `=` opens a Python repr's quotes (`KeyError('bob@…')`)."""
    return text[index] == "'" and index > done and text[index - 1].isalnum()


class JsonLineFormatter(logging.Formatter):
    """With pseudonyms in use, whatever a record holds goes through them, from
    `log_event` or any library's logger, its message and traceback included."""

    def format(self, record: logging.LogRecord) -> str:
        """A record that cannot be formatted is one fixed line naming only what failed:
        logging's own report of the failure would print the record's arguments and
        traceback raw on stderr, past the pseudonyms."""
        try:
            return self._formatted(record)
        except Exception as exc:
            return json.dumps({
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
                "level": "error",
                "logger": record.name,
                "event": "log-line-unformattable",
                "error": type(exc).__name__,
            })

    def _formatted(self, record: logging.LogRecord) -> str:
        event = record.getMessage()
        exception = self.formatException(record.exc_info) if record.exc_info else None
        fields = getattr(record, "fields", {})
        pseudonym = _pseudonym
        if pseudonym is not None:
            event = _quoted_people_pseudonymised(event, pseudonym)
            if exception is not None:
                exception = _quoted_people_pseudonymised(exception, pseudonym)
            fields = _pseudonymised_fields(fields, pseudonym)
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": event,
        }
        entry.update(fields)
        if exception is not None:
            entry["exception"] = exception
        return json.dumps(entry, default=str, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):
    def handleError(self, record: logging.LogRecord) -> None:
        """A line stderr would not take is dropped: logging's own report of it prints the
        record's arguments raw, past the pseudonyms, to the same stderr."""


def configure_logging(level: str = "INFO") -> None:
    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("mail.log", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    leaked = FORBIDDEN_FIELDS.intersection(fields)
    if leaked:
        raise ValueError(f"refusing to log secret-bearing fields {sorted(leaked)}")
    logger.log(level, event, extra={"fields": fields})
