"""One header class per header parser, instead of one per parsed header.

The stdlib header registry creates a new class for every header it parses, which costs
more than parsing a short Subject. The class depends only on which parser the name maps to
and on the registry's base class, so the stand-in for `HeaderRegistry.__getitem__` creates
each once (a bounded set, whatever names a message uses). It builds the class as the stdlib
does, from the registry's undocumented attributes, so it is installed only on the Python
version it was checked against and while that method's source is the one it was checked
against; and only for `SpeedupHeaderRegistry`, the gateway's own registry.
"""

from __future__ import annotations

from email.headerregistry import BaseHeader, HeaderRegistry

from gateway.speedups.base import PYTHON, Patch, Speedup, source_digest

# Python 3.11's HeaderRegistry.__getitem__: type('_' + cls.__name__, (cls, base_class), {}).
STDLIB_GETITEM_SHA256 = "3acae71d2753e97587111f90ef2e987bc5f18d20de6e43da8a36a94b55cb298f"

_classes: dict[tuple[type, type], type[BaseHeader]] = {}


class SpeedupHeaderRegistry(HeaderRegistry):
    """`HeaderRegistry`, reusing header classes while this speedup is installed."""


def header_class(registry: HeaderRegistry, name: str) -> type[BaseHeader]:
    """`HeaderRegistry.__getitem__`, creating each class once."""
    parser = registry.registry.get(name.lower(), registry.default_class)
    key = (parser, registry.base_class)
    if key not in _classes:
        _classes[key] = type("_" + parser.__name__, key, {})
    return _classes[key]


def _library_changed() -> str | None:
    if source_digest(HeaderRegistry.__getitem__) != STDLIB_GETITEM_SHA256:
        return "email.headerregistry.HeaderRegistry.__getitem__ is not the code stood in for"
    return None


SPEEDUP = Speedup(
    name="header_classes",
    checked_versions={PYTHON: ("3.11",)},
    patches=(Patch(SpeedupHeaderRegistry, "__getitem__", header_class),),
    library_changed=_library_changed,
)
