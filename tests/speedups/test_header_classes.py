"""Reused header classes against the stdlib registry's fresh ones: the same parse, the same
parser class, whatever the header."""

from __future__ import annotations

from email.headerregistry import AddressHeader, HeaderRegistry

import pytest

from gateway.speedups.header_classes import SPEEDUP, SpeedupHeaderRegistry
from tests.speedups import switched

HEADER_SAMPLES = [
    ("Subject", "=?utf-8?q?Gr=C3=BC=C3=9Fe?= from Katie"),
    ("To", 'Bob <bob@customer.test>, "Smith, Ann" <ann@customer.test>, team: c@d.test;'),
    ("From", "not an address <<"),
    ("Date", "Fri, 27 Nov 2026 10:00:00 +0000"),
    ("Message-ID", "<1@example.com>"),
    ("Content-Type", 'multipart/mixed; boundary="b"; charset*=utf-8\'\'%C3%BC'),
    ("Content-Disposition", 'attachment; filename="brochure.pdf"'),
    ("X-Campaign", "spring"),
]


@pytest.mark.parametrize(("name", "value"), HEADER_SAMPLES, ids=[n for n, _ in HEADER_SAMPLES])
def test_reused_header_classes_parse_as_the_stdlib_registry_does(name: str, value: str) -> None:
    with switched(SPEEDUP, True):
        ours = SpeedupHeaderRegistry()(name, value)
    stdlib = HeaderRegistry()(name, value)
    assert type(ours).__name__ == type(stdlib).__name__
    assert type(ours).__bases__ == type(stdlib).__bases__
    assert str(ours) == str(stdlib)
    assert [type(d) for d in ours.defects] == [type(d) for d in stdlib.defects]
    assert getattr(ours, "addresses", None) == getattr(stdlib, "addresses", None)
    assert getattr(ours, "params", None) == getattr(stdlib, "params", None)


def test_header_classes_are_created_once_per_parser_and_follow_remapping() -> None:
    registry = SpeedupHeaderRegistry()
    with switched(SPEEDUP, True):
        assert type(registry("X-One", "a")) is type(registry("X-Two", "b"))
        assert type(registry("To", "a@b.test")) is not type(registry("X-One", "a"))
        registry.map_to_type("X-One", AddressHeader)
        assert registry("X-One", "Bob <bob@customer.test>").addresses[0].username == "bob"


def test_uninstalled_the_registry_is_the_stdlibs() -> None:
    registry = SpeedupHeaderRegistry()
    with switched(SPEEDUP, False):
        assert "__getitem__" not in vars(SpeedupHeaderRegistry)
        assert type(registry("X-One", "a")) is not type(registry("X-Two", "b"))
