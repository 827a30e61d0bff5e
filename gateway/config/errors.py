"""The one error every configuration problem is reported as."""

from __future__ import annotations


class ConfigError(Exception):
    """One invalid or missing value, named by its dotted key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config error: {key}: {problem}")
        self.key = key
        self.problem = problem
