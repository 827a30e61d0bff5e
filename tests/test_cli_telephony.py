"""`check call|sms`, the consent and location registries and DNC imports, as an operator
runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.services.csv_cells import read_cell
from tests.conftest import write_config
from tests.test_cli import cli

NY = "+12125550123"
NOON_NY = "2026-06-02T16:00:00Z"
LATE_NY = "2026-06-03T02:30:00Z"


TORONTO = "+14165550123"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A texting agent whose callee in New York gave prior express written consent."""
    path = write_config(tmp_path)
    added = cli(path, "consent", "add", NY, "--channel", "sms", "--kind", "express-written",
                "--obtained-at", "2025-01-10T12:00:00+00:00", "--source", "signed web form")
    assert added.returncode == 0, added.stderr
    return path


def check(config: Path, *args: str):
    result = cli(config, "check", *args)
    return result.returncode, (json.loads(result.stdout) if result.stdout else None), result


def test_check_call_window_exit_codes_and_evidence(config: Path) -> None:
    code, decision, _ = check(config, "sms", "--to", NY, "--at", NOON_NY)
    assert code == 0, decision
    assert decision["evidence"][NY]["zones"] == ["America/New_York"]
    code, decision, _ = check(config, "sms", "--to", NY, "--at", LATE_NY)
    assert code == 1
    assert {r["code"] for r in decision["reasons"]} == {"QUIET_HOURS"}
    code, decision, _ = check(config, "sms", "--to", NY, "--at", LATE_NY,
                              "--purpose", "transactional")
    assert code == 0


@pytest.mark.parametrize(
    "args",
    [
        ("call", "--to", NY, "--at", "yesterday-ish"),
        ("call", "--to", NY, "--purpose", "spam"),
        ("call", "--to", NY, "--timezone", "Mars/Olympus_Mons"),
        ("call",),
        ("fax", "--to", NY),
    ],
)
def test_check_invalid_input_is_exit_2_with_one_line(config: Path, args) -> None:
    result = cli(config, "check", *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_calls_need_written_consent_and_recorded_consent_expires(config: Path) -> None:
    """With no configuration: an AI agent's marketing call needs prior express written
    consent (FCC 24-17); CASL's implied consent from an inquiry lasts six months."""
    code, decision, _ = check(config, "call", "--to", NY, "--at", NOON_NY)
    assert code == 1
    assert [r["rule"] for r in decision["reasons"]] == ["tcpa.consent.artificial_voice"]
    inquiry = cli(config, "consent", "add", NY, "--channel", "call", "--kind", "implied-inquiry",
                  "--obtained-at", "2026-01-10T12:00:00+00:00", "--source", "web form")
    assert inquiry.returncode == 0, inquiry.stderr
    assert check(config, "call", "--to", NY, "--at", NOON_NY)[0] == 1, "not written consent"
    written = cli(config, "consent", "add", NY, "--channel", "call", "--kind", "express-written",
                  "--obtained-at", "2026-01-10T12:00:00+00:00", "--source", "signed form")
    assert written.returncode == 0, written.stderr
    assert check(config, "call", "--to", NY, "--at", NOON_NY)[0] == 0
    added = cli(config, "consent", "add", TORONTO, "--channel", "sms", "--kind",
                "implied-inquiry", "--obtained-at", "2026-01-10T12:00:00+00:00",
                "--source", "web form")
    assert added.returncode == 0, added.stderr
    listed = json.loads(cli(config, "consent", "list", TORONTO).stdout)
    assert listed[0]["expires_at"] == "2026-07-10T12:00:00+00:00"
    assert check(config, "sms", "--to", TORONTO, "--at", NOON_NY)[0] == 0
    code, decision, _ = check(config, "sms", "--to", TORONTO, "--at", "2026-07-14T16:00:00Z")
    assert code == 1
    assert [r["rule"] for r in decision["reasons"]] == ["casl.consent"]


def test_consent_import_all_or_nothing(config: Path, tmp_path: Path) -> None:
    bad = tmp_path / "consents.csv"
    bad.write_text(
        "subject,channel,kind,obtained_at,source,evidence\n"
        f"{NY},call,express,2026-01-01T00:00:00+00:00,crm,rec-1\n"
        "+12125550199,call,whenever,2026-01-01T00:00:00+00:00,crm,\n"
    )
    result = cli(config, "consent", "import", str(bad))
    assert result.returncode == 2
    assert "line 3" in result.stderr
    before = json.loads(cli(config, "consent", "list", NY).stdout)
    assert [c["channel"] for c in before] == ["sms"], "only the fixture's consent"
    bad.write_text(bad.read_text().replace("whenever", "implied-purchase"))
    assert cli(config, "consent", "import", str(bad)).returncode == 0
    [express] = [c for c in json.loads(cli(config, "consent", "list", NY).stdout)
                 if c["channel"] == "call"]
    assert express["expires_at"] is None
    assert express["evidence"] == "rec-1"


def test_known_location_in_another_zone_narrows_the_window(config: Path) -> None:
    # 20:30 in New York, already 02:30 in Berlin where the callee is known to live.
    at = "2026-06-03T00:30:00Z"
    assert check(config, "sms", "--to", NY, "--at", at)[0] == 0
    result = cli(config, "location", "set", NY, "--timezone", "Europe/Berlin", "--region", "US-NY")
    assert result.returncode == 0, result.stderr
    code, decision, _ = check(config, "sms", "--to", NY, "--at", at)
    assert code == 1
    assert "Europe/Berlin" in decision["evidence"][NY]["zones"]
    shown = json.loads(cli(config, "location", "show", NY).stdout)
    assert shown[NY]["timezone"] == "Europe/Berlin"
    assert cli(config, "location", "set", NY).returncode == 2


def test_dnc_registry_import_records_the_list_as_source(config: Path, tmp_path: Path) -> None:
    registry = tmp_path / "dnc.txt"
    registry.write_text("2125550123\n305-555-0123\n\n(415) 555 0100\n")
    result = cli(config, "suppress", "import", "--format", "dnc", str(registry))
    assert result.returncode == 0, result.stderr
    listed = cli(config, "suppress", "list").stdout.splitlines()
    assert sorted(read_cell(line.split(",")[0]) for line in listed) == [
        "+12125550123", "+13055550123", "+14155550100",
    ]
    assert all(",national-dnc:dnc.txt," in line for line in listed)
    assert check(config, "sms", "--to", NY, "--at", NOON_NY)[0] == 1
    broken = tmp_path / "dncl.txt"
    broken.write_text("4165550100\n12345\n")
    result = cli(config, "suppress", "import", "--format", "dncl", str(broken))
    assert result.returncode == 2
    assert "line 2" in result.stderr


def test_a_dry_run_zone_never_narrows_what_the_send_checks(config: Path) -> None:
    """850 spans Eastern and Central time; the registry knows only the state. A check with
    `--timezone America/Chicago` adds that zone: it must not narrow the callee to Central
    time, where 20:30 Eastern is still 19:30 and Florida's 20:00 end would look open."""
    panhandle = "+18505550123"
    consent = cli(config, "consent", "add", panhandle, "--channel", "sms", "--kind",
                  "express-written", "--obtained-at", "2025-01-10T12:00:00+00:00",
                  "--source", "signed web form")
    assert consent.returncode == 0, consent.stderr
    assert cli(config, "location", "set", panhandle, "--region", "US-FL").returncode == 0
    at = "2026-06-03T00:30:00Z"  # 20:30 EDT, 19:30 CDT
    code, decision, _ = check(config, "sms", "--to", panhandle, "--at", at,
                              "--timezone", "America/Chicago")
    assert code == 1, decision
    assert "America/New_York" in decision["evidence"][panhandle]["zones"]
