"""The one switch: `install(True)` puts in every speedup whose library is as checked,
`install(False)` (`[gateway] speedups = false`) none, and a library of another version or
with other code is left as it is, with a warning saying why."""

from __future__ import annotations

import email.feedparser
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import aiosmtpd.smtp
import pytest
from aiosmtplib import protocol

from gateway import speedups
from gateway.config.settings import ConfigError, load_config
from gateway.runtime.logs import JsonLineFormatter
from gateway.speedups import base, data_section
from tests import conftest
from tests.conftest import write_config
from tests.test_cli import ServeProcess

ALL = [speedup.name for speedup in speedups.SPEEDUPS]


@pytest.fixture(autouse=True)
def as_before() -> Iterator[None]:
    """Whatever these tests install, the session's choice is back afterwards."""
    yield
    speedups.install(conftest.SPEEDUPS)


def skipped(caplog: pytest.LogCaptureFixture) -> dict[str, dict]:
    """The warnings logged, by speedup, as the JSON lines the gateway writes."""
    found = {}
    for record in caplog.records:
        if record.getMessage() == "speedup-skipped":
            assert record.levelno == logging.WARNING
            entry = json.loads(JsonLineFormatter().format(record))
            found[entry["speedup"]] = entry
    return found


def assert_libraries_as_they_are() -> None:
    assert email.feedparser.re is re
    assert isinstance(email.feedparser.NLCRE_eol, re.Pattern)
    assert protocol.normalize_message_line_endings.__module__ == "aiosmtplib.protocol"
    assert isinstance(protocol.PERIOD_REGEX, re.Pattern)
    assert aiosmtpd.smtp.SMTP.smtp_DATA.__module__ == "aiosmtpd.smtp"
    for speedup in speedups.SPEEDUPS:
        for patch in speedup.patches:
            value = getattr(patch.owner, patch.name)
            assert not getattr(value, "__module__", "").startswith("gateway."), patch
            assert not patch.installed(), patch


def test_every_speedup_installs_on_the_versions_it_was_checked_against(caplog) -> None:
    """Fails after a library upgrade: check the speedup against it (tests/speedups), then
    add the version to its `checked_versions` and widen the pin in pyproject.toml."""
    with caplog.at_level(logging.INFO, "gateway.speedups"):
        assert speedups.install(True) == ALL
    assert skipped(caplog) == {}
    assert all(speedup.installed() for speedup in speedups.SPEEDUPS)


def test_speedups_off_leave_every_library_as_it_is() -> None:
    speedups.install(True)
    assert speedups.install(False) == []
    assert_libraries_as_they_are()


def test_uninstall_puts_back_every_original() -> None:
    speedups.install(True)
    speedups.uninstall()
    assert_libraries_as_they_are()


def test_another_library_version_is_skipped_with_a_warning(monkeypatch, caplog) -> None:
    real = base.library_version

    def newer_aiosmtplib(library: str) -> str:
        return "5.2.0" if library == "aiosmtplib" else real(library)

    monkeypatch.setattr(base, "library_version", newer_aiosmtplib)
    with caplog.at_level(logging.INFO, "gateway.speedups"):
        installed = speedups.install(True)
    assert installed == [name for name in ALL if name != "dot_stuffing"]
    warning = skipped(caplog)["dot_stuffing"]
    assert warning["level"] == "warning"
    assert warning["versions"] == {"aiosmtplib": "5.2.0"}
    assert warning["checked"] == {"aiosmtplib": ["5.1.3"]}
    assert "aiosmtplib 5.2.0" in warning["reason"]
    assert protocol.normalize_message_line_endings.__module__ == "aiosmtplib.protocol"
    assert isinstance(protocol.PERIOD_REGEX, re.Pattern)


def test_another_python_skips_what_stands_in_for_the_standard_library(
    monkeypatch, caplog
) -> None:
    monkeypatch.setattr(base.platform, "python_version", lambda: "3.12.1")
    with caplog.at_level(logging.INFO, "gateway.speedups"):
        assert speedups.install(True) == ["dot_stuffing", "dkim_rsa"]
    assert set(skipped(caplog)) == set(ALL) - {"dot_stuffing", "dkim_rsa"}
    assert email.feedparser.re is re
    assert aiosmtpd.smtp.SMTP.smtp_DATA.__module__ == "aiosmtpd.smtp"


def test_changed_library_code_is_skipped_with_a_warning(monkeypatch, caplog) -> None:
    """The same version number, other code (a distribution's patched build, say)."""
    monkeypatch.setattr(data_section, "AIOSMTPD_DATA_SHA256", "0" * 64)
    with caplog.at_level(logging.INFO, "gateway.speedups"):
        assert "data_section" not in speedups.install(True)
    assert "smtp_DATA" in skipped(caplog)["data_section"]["reason"]
    assert aiosmtpd.smtp.SMTP.smtp_DATA is data_section.AIOSMTPD_DATA


@pytest.mark.parametrize(("value", "expected"), [(None, True), ("true", True), ("false", False)])
def test_the_switch_is_read_from_the_gateway_section(tmp_path: Path, value, expected) -> None:
    path = write_config(tmp_path, speedups=value or "true")
    if value is None:
        path.write_text(path.read_text().replace("speedups = true\n", ""))
    assert load_config(path).speedups is expected


def test_a_switch_that_is_not_a_boolean_stops_start_up(tmp_path: Path) -> None:
    path = write_config(tmp_path, speedups='"yes"')
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert error.value.key == "gateway.speedups"


@pytest.mark.parametrize("on", [True, False], ids=["speedups", "no speedups"])
def test_the_server_installs_what_its_configuration_says(tmp_path, monkeypatch, on) -> None:
    monkeypatch.setattr(conftest, "SPEEDUPS", on)
    server = ServeProcess(tmp_path)
    _, stderr = server.stop()
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    names = [event["event"] for event in events]
    if on:
        [installed] = [e for e in events if e["event"] == "speedups-installed"]
        assert installed["speedups"] == ALL
    else:
        assert "speedups-off" in names
        assert "speedups-installed" not in names
