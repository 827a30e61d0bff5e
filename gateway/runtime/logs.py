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
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

FORBIDDEN_FIELDS = frozenset({"secret", "password", "auth_token", "token_key", "body"})
PERSONAL_FIELDS = frozenset({"recipient", "recipients"})
"""Fields that name people: every text in them is logged as its pseudonym while one is in
use, whatever its shape (a number that did not parse too)."""
PERSONAL_TEXT = re.compile(
    r"[\w.!#$%*+^`{|}~-]+@[\w-]+(?:\.[\w-]+)+"  # an address (not the quote around it)
    r"|\+[0-9]{7,15}"  # an E.164 number
)
"""An address or number quoted inside free text: a provider's refusal, a store error, a
request path, a traceback. Replaced in the whole line, whatever field or library wrote it."""

Pseudonym = Callable[[str], str]
_pseudonym: Pseudonym | None = None


def use_pseudonyms(pseudonym: Pseudonym | None) -> None:
    """From now on, every person this process logs is named by `pseudonym` (None: as they
    are). Set by the services once the data keys are read."""
    global _pseudonym
    _pseudonym = pseudonym


def _pseudonymised(value: Any, pseudonym: Pseudonym, personal: bool = False) -> Any:
    if isinstance(value, str):
        return pseudonym(value) if personal and value else value
    if isinstance(value, Mapping):
        return {key: _pseudonymised(item, pseudonym, personal or key in PERSONAL_FIELDS)
                for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_pseudonymised(item, pseudonym, personal) for item in value]
    return value


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = json.dumps(entry, default=str, ensure_ascii=False)
        pseudonym = _pseudonym
        if pseudonym is not None:
            line = PERSONAL_TEXT.sub(lambda found: pseudonym(found.group()), line)
        return line


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
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
    if _pseudonym is not None:
        fields = _pseudonymised(fields, _pseudonym)
    logger.log(level, event, extra={"fields": fields})
