"""A speedup: attributes of a library replaced by faster stand-ins, only while the library's
version and code are the ones the stand-ins were checked against, and put back on request.

A stand-in copies what a library does, often by its private members, so a library that
changes underneath it could make the gateway behave differently without any error. The
version says which release was checked; the code check (a pattern, or the source of the
function stood in for) catches what a version number does not, such as a distribution's
patched build of the same release.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PYTHON = "python"  # the standard library, versioned by the interpreter
_ABSENT = object()


@dataclass(frozen=True)
class Patch:
    """One attribute of a module or class and its stand-in. An attribute the owner did not
    have itself (a speedup's own subclass inheriting the library's method) is removed again
    on uninstall."""

    owner: Any
    name: str
    replacement: Any
    original: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "original", vars(self.owner).get(self.name, _ABSENT))

    def installed(self) -> bool:
        return vars(self.owner).get(self.name, _ABSENT) is self.replacement

    def install(self) -> None:
        setattr(self.owner, self.name, self.replacement)

    def uninstall(self) -> None:
        if not self.installed():
            return
        if self.original is _ABSENT:
            delattr(self.owner, self.name)
        else:
            setattr(self.owner, self.name, self.original)


@dataclass(frozen=True)
class Speedup:
    name: str
    # Library (a distribution name, or PYTHON) -> the versions it was checked against:
    # exact versions, or "3.11" for every 3.11.x.
    checked_versions: dict[str, tuple[str, ...]]
    patches: tuple[Patch, ...]
    # Why the library's code is no longer what the patches stand in for, or None.
    library_changed: Callable[[], str | None]

    def versions(self) -> dict[str, str]:
        return {library: library_version(library) for library in self.checked_versions}

    def skip_reason(self) -> str | None:
        for library, version in self.versions().items():
            checked = self.checked_versions[library]
            if not any(version == v or version.startswith(v + ".") for v in checked):
                return f"{library} {version} is not a version this speedup was checked against"
        return self.library_changed()

    def installed(self) -> bool:
        return all(patch.installed() for patch in self.patches)

    def install(self) -> None:
        for patch in self.patches:
            patch.install()

    def uninstall(self) -> None:
        for patch in self.patches:
            patch.uninstall()


def library_version(library: str) -> str:
    if library == PYTHON:
        return platform.python_version()
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def source_digest(function: Callable[..., Any]) -> str:
    """SHA-256 of a function's source; empty where the source is not installed."""
    try:
        return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()
    except (OSError, TypeError):
        return ""
