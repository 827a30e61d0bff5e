"""The one Jinja2 environment every people-facing page renders with.

Autoescaping is on for every template, whatever its name: agents write subjects, senders,
display names and recipients, and a value is only ever shown as text. `StrictUndefined`
turns a misspelt variable into an error in the tests instead of an empty cell in front of
a regulator.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

ENVIRONMENT = Environment(
    loader=PackageLoader("gateway.web", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
)


def in_utc(moment: datetime) -> datetime:
    """The `utc` filter: pages show every time in UTC, whatever offset it was stored with."""
    return moment.astimezone(UTC)


ENVIRONMENT.filters["utc"] = in_utc


def render(template: str, **context: Any) -> str:
    return ENVIRONMENT.get_template(template).render(**context)
