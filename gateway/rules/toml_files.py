"""Rule files read through the shared TOML reader, with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.config.toml_reader import ErrorFactory, TomlTable, read_toml
from gateway.rules.errors import RulesError


def file_table(path: Path) -> TomlTable:
    return TomlTable(read_toml(path, RulesError), file_error(path))


def file_error(path: Path) -> ErrorFactory:
    def error(key: str, problem: str) -> RulesError:
        return RulesError(f"{path}: {key} {problem}" if key else f"{path}: {problem}")

    return error


def nested_table(entry: TomlTable, key: str, data: Any) -> TomlTable:
    return TomlTable(data, entry.error_factory, entry.key(key))
