"""The one typed TOML reader, shared by the configuration and the rule data.

Both are reviewed by people who did not write the code: every error names the file or the
dotted key (`smtp.listen`, `rule[3](us.tcpa.hours).citation`) and what is wrong with it,
and a key nobody reads is an error, since a typo would otherwise be silently ignored.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ENV_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")

# Builds the caller's own error from the dotted key ("" for the table itself) and the problem.
ErrorFactory = Callable[[str, str], Exception]


def read_toml(path: Path, error: Callable[[str], Exception]) -> dict[str, Any]:
    """The parsed file, or `error(text)` saying why it cannot be read."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from exc


class TomlTable:
    """One table being read: typed getters, and unknown keys refused.

    `known` refuses unknown keys up front; without it, `finish()` refuses every key no getter
    asked for. `environment` lets a string value `"${NAME}"` come from the environment
    (configuration secrets; never rule data, which must be reviewable as written).
    """

    def __init__(
        self,
        data: Any,
        error: ErrorFactory,
        prefix: str = "",
        *,
        known: Iterable[str] | None = None,
        environment: bool = False,
    ) -> None:
        self.error_factory = error
        self.prefix = prefix
        self.environment = environment
        if data is None and known is not None:
            data = {}
        if not isinstance(data, dict):
            raise self.error("", "must be a table")
        self.data: dict[str, Any] = data
        self.read: set[str] = set()
        if known is not None:
            allowed = set(known)
            for key in data:
                if key not in allowed:
                    raise self.error(key, "unknown key")

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix and name else self.prefix or name

    def error(self, name: str, problem: str) -> Exception:
        return self.error_factory(self.key(name), problem)

    def get(self, name: str) -> Any:
        self.read.add(name)
        value = self.data.get(name)
        if self.environment and isinstance(value, str):
            match = ENV_REFERENCE.match(value)
            if match:
                env_name = match.group(1)
                if env_name not in os.environ:
                    raise self.error(name, f"environment variable {env_name} is not set")
                return os.environ[env_name]
        return value

    def string(self, name: str, default: str | None = None, *, required: bool = False) -> str:
        """Missing is an error unless there is a default; `required` refuses a blank value
        too (and any default)."""
        value = self.get(name)
        if value is None:
            if required or default is None:
                raise self.error(name, "is required")
            return default
        if not isinstance(value, str):
            raise self.error(name, "must be a string")
        if required and not value.strip():
            raise self.error(name, "must not be empty")
        return value

    def strings(self, name: str, *, allow_empty: bool = False) -> list[str]:
        value = self.get(name)
        if value is None and allow_empty:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(name, "must be a list of non-empty strings")
        if not value and not allow_empty:
            raise self.error(name, "must not be empty")
        return value

    def integer(
        self, name: str, default: int | None = None, *, minimum: int = 0,
        maximum: int | None = None,
    ) -> int:
        value = self.get(name)
        if value is None and default is not None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(name, f"must be an integer >= {minimum}")
        if maximum is not None and value > maximum:
            raise self.error(name, f"must be between {minimum} and {maximum}")
        return value

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, "must be a number")
        if not math.isfinite(value):  # TOML has nan and inf, and nan passes every comparison
            raise self.error(name, "must be a finite number")
        if value < minimum:
            raise self.error(name, f"must be at least {minimum}")
        return float(value)

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(name, "must be true or false")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(name, default)
        if value not in choices:
            raise self.error(name, f"must be one of {', '.join(choices)}")
        return value

    def table(self, name: str, *, known: Iterable[str] | None = None) -> TomlTable:
        return TomlTable(
            self.get(name), self.error_factory, self.key(name), known=known,
            environment=self.environment,
        )

    def entries(self, name: str) -> list[TomlTable]:
        """An array of tables (`[[name]]`), which must have at least one entry."""
        value = self.get(name)
        if not isinstance(value, list) or not value:
            raise self.error(name, f"[[{name}]] entries are missing")
        return [
            TomlTable(item, self.error_factory, f"{self.key(name)}[{index}]",
                      environment=self.environment)
            for index, item in enumerate(value)
        ]

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            raise self.error(unknown[0], "is not a known key")
