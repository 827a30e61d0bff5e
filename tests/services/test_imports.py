"""`suppress import FILE`: CSV and do-not-call registry files through the real command, then
checked with `check` and the audit log; and the import fast paths against the full parsers."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import string
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.addresses import InvalidAddress, suppression_key
from gateway.services.csv_cells import read_cell
from gateway.services.imports import bulk_key, registry_key, validated_key
from tests.conftest import write_config
from tests.test_cli import cli

NOON_NY = "2026-06-02T16:00:00Z"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def imported(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = cli(config, "suppress", "import", *args)
    assert result.returncode == 0, result.stderr
    return result


def listed(config: Path) -> dict[str, str]:
    """address -> source, from `suppress list` (numbers are written formula-safe)."""
    rows = cli(config, "suppress", "list").stdout.splitlines()
    return {read_cell(row.split(",")[0]): row.split(",")[1] for row in rows}


def audit_actions(config: Path) -> list[dict]:
    lines = cli(config, "audit", "list").stdout.splitlines()
    return [json.loads(line) for line in lines]


def blocked(config: Path, *check: str) -> list[str]:
    result = cli(config, "check", *check)
    assert result.returncode in (0, 1), result.stderr
    return [reason["code"] for reason in json.loads(result.stdout)["reasons"]]


def test_csv_with_a_header_imports_the_named_column_and_the_address_is_blocked(
    config: Path, tmp_path: Path
) -> None:
    rows = write(tmp_path, "crm.csv", "name,Email,phone\n"
                 'Bob,Bob@Client.Example.NET,+1 212 555 0199\n'
                 '"Ada, Countess",ada@client.example.net,\n'
                 "Bob again,bob@client.example.net,\n")
    result = imported(config, str(rows))
    assert result.stdout.strip() == (
        "imported crm.csv: 3 rows read, 3 valid (2 new, 0 already present, "
        "1 repeated in the file), 0 bad"
    )
    assert result.stderr == ""  # not a terminal: no progress bar
    assert listed(config) == {
        "ada@client.example.net": "import:crm.csv", "bob@client.example.net": "import:crm.csv",
    }
    assert blocked(config, "email", "--to", "BOB@client.example.net",
                   "--from", "katie@example.com") == ["SUPPRESSED"]
    assert blocked(config, "email", "--to", "carol@client.example.net",
                   "--from", "katie@example.com") == []


def test_csv_without_a_header_takes_the_first_column(config: Path, tmp_path: Path) -> None:
    rows = write(tmp_path, "plain.csv", "a@x.example.net,first\n\n+14155550100,second\n")
    assert "2 rows read, 2 valid (2 new" in imported(config, str(rows)).stdout
    assert set(listed(config)) == {"a@x.example.net", "+14155550100"}


def test_dnc_and_dncl_files_suppress_calls_and_texts(config: Path, tmp_path: Path) -> None:
    dnc = write(tmp_path, "dnc-212.txt", "2125550123\r\n305-555-0123\r\n\r\n(415) 555 0100\r\n"
                "12125550188\r\n2125550123\r\n")
    result = imported(config, "--format", "dnc", str(dnc))
    assert result.stdout.strip() == (
        "imported dnc-212.txt: 5 rows read, 5 valid (4 new, 0 already present, "
        "1 repeated in the file), 0 bad"
    )
    dncl = write(tmp_path, "dncl.txt", "4165550100\n2125550123\n")
    assert "(1 new, 1 already present" in imported(config, "--format", "dncl", str(dncl)).stdout
    sources = cli(config, "suppress", "list").stdout.splitlines()
    assert sorted([read_cell(line.split(",")[0]), line.split(",")[1]] for line in sources) == [
        ["+12125550123", "canada-dncl:dncl.txt"], ["+12125550123", "national-dnc:dnc-212.txt"],
        ["+12125550188", "national-dnc:dnc-212.txt"], ["+13055550123", "national-dnc:dnc-212.txt"],
        ["+14155550100", "national-dnc:dnc-212.txt"], ["+14165550100", "canada-dncl:dncl.txt"],
    ]
    assert "SUPPRESSED" in blocked(config, "sms", "--to", "+12125550188", "--at", NOON_NY)
    assert "SUPPRESSED" in blocked(config, "call", "--to", "+14165550100", "--at", NOON_NY)
    assert "SUPPRESSED" not in blocked(config, "sms", "--to", "+12125550177", "--at", NOON_NY)


def test_bad_rows_are_named_by_line_and_nothing_is_applied(config: Path, tmp_path: Path) -> None:
    lines = ["2125550100"] + [f"212555{n:04d}" if n % 3 else f"bad{n}" for n in range(101, 140)]
    dnc = write(tmp_path, "dnc.txt", "\n".join(lines) + "\n")
    bad_lines = [number for number, line in enumerate(lines, start=1) if line.startswith("bad")]
    assert len(bad_lines) == 13

    result = cli(config, "suppress", "import", "--format", "dnc", str(dnc))
    assert result.returncode == 2
    assert result.stdout == ""
    reported = result.stderr.splitlines()
    assert [f"line {n}:" in line for n, line in zip(bad_lines[:10], reported, strict=False)] == [
        True
    ] * 10
    assert "'bad102'" in reported[0]
    assert reported[10].endswith("and 3 more bad rows")
    assert reported[11] == (
        f"error: {dnc}: 13 of 40 rows are bad, nothing imported "
        "(fix them, or add --skip-bad to import the 27 valid rows)"
    )
    assert listed(config) == {}
    assert audit_actions(config) == []


def test_skip_bad_applies_the_valid_rows_and_still_reports_the_bad(
    config: Path, tmp_path: Path
) -> None:
    rows = write(tmp_path, "mixed.csv", "email\na@x.example.net\nnot an address\n"
                 "b@x.example.net\n,,\nonly,a name\nc@localhost\n")
    result = imported(config, "--skip-bad", str(rows))
    assert result.stdout.strip() == (
        "imported mixed.csv: 5 rows read, 2 valid (2 new, 0 already present, "
        "0 repeated in the file), 3 bad (skipped)"
    )
    assert [line.split(":")[1] for line in result.stderr.splitlines()] == [
        " line 3", " line 6", " line 7",
    ]
    assert set(listed(config)) == {"a@x.example.net", "b@x.example.net"}


def test_re_import_adds_nothing_new_and_each_import_is_one_audit_entry(
    config: Path, tmp_path: Path
) -> None:
    rows = write(tmp_path, "list.csv", "address\n" + "".join(
        f"person{n}@client.example.net\n" for n in range(500)
    ))
    assert "(500 new, 0 already present" in imported(config, str(rows)).stdout
    assert "(0 new, 500 already present" in imported(config, str(rows)).stdout
    assert len(listed(config)) == 500
    entries = audit_actions(config)
    assert [(e["action"], e["subject"]) for e in entries] == [
        ("suppression.import", "import:list.csv")
    ] * 2
    digest = hashlib.sha256(rows.read_bytes()).hexdigest()
    assert [(e["details"]["new"], e["details"]["count"], e["details"]["sha256"])
            for e in entries] == [(500, 500, digest), (0, 500, digest)]
    verified = cli(config, "audit", "verify")
    assert verified.returncode == 0, verified.stdout


def test_a_store_failure_mid_import_applies_nothing(config: Path, tmp_path: Path) -> None:
    """The store refuses the very last row, after the first chunk (50,000) was written in
    the same transaction: all of it is rolled back and the exit status says unavailable.
    (Addresses are stored as blind indexes, so the trigger counts rows instead.)"""
    numbers = [f"212{n}" for n in range(2_000_000, 2_060_000)]
    dnc = write(tmp_path, "dnc.txt", "\n".join(numbers) + "\n")
    assert cli(config, "suppress", "list").returncode == 0  # creates the database
    with sqlite3.connect(tmp_path / "var" / "gateway.db") as database:
        database.execute(
            "CREATE TRIGGER refuse_last BEFORE INSERT ON suppressions"
            f" WHEN (SELECT count(*) FROM suppressions) = {len(numbers) - 1}"
            " BEGIN SELECT RAISE(ABORT, 'disk quota exceeded'); END"
        )
    result = cli(config, "suppress", "import", "--format", "dnc", str(dnc))
    assert result.returncode == 3
    assert "store unavailable" in result.stderr
    assert listed(config) == {}
    assert audit_actions(config) == []


def test_an_unreadable_file_is_one_error_line(config: Path, tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("address\nj\xf6rg@x.example.net\n".encode("latin-1"))
    for path in (latin1, tmp_path / "missing.csv"):
        result = cli(config, "suppress", "import", str(path))
        assert result.returncode == 2
        assert result.stderr.startswith(f"error: cannot read {path}")
        assert result.stderr.count("\n") == 1


def test_a_terminal_gets_a_progress_bar_on_stderr(config: Path, tmp_path: Path) -> None:
    dnc = write(tmp_path, "dnc.txt", "".join(f"212{n}\n" for n in range(2_000_000, 2_020_000)))
    leader, follower = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "suppress", "import", "--format", "dnc", str(dnc),
         "--config", str(config)],
        stdout=subprocess.PIPE, stderr=follower, text=True,
    )
    os.close(follower)
    terminal = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the command closed its end
            break
        if not chunk:
            break
        terminal += chunk
    os.close(leader)
    stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    assert "(20000 new" in stdout
    screen = terminal.decode()
    assert "\rreading dnc.txt [" in screen
    assert "\rwriting [" in screen
    assert "100%  0.2 of 0.2 MB" in screen
    assert "100%  20,000 of 20,000 entries" in screen
    assert screen.endswith("\n")


# --- the fast paths give exactly the keys of the full parsers -----------------------------

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"
local_parts = st.text(alphabet=ATEXT + ".", max_size=70) | st.text(max_size=8)
labels = st.text(alphabet=string.ascii_letters + string.digits + "-", max_size=64)
top_levels = st.sampled_from(
    ["com", "NET", "test", "local", "invalid", "localhost", "123", "xn--p1ai", "onion", "x"]
) | labels
domains = st.builds(
    lambda parts, top: ".".join([*parts, top]), st.lists(labels, min_size=0, max_size=4),
    top_levels,
)
emails = st.builds(lambda local, domain: f"{local}@{domain}", local_parts, domains)
numbers = st.from_regex(r"\+1[0-9]{10}", fullmatch=True) | st.from_regex(
    r"\+?[0-9 ()-]{0,16}", fullmatch=True
)


def outcome(key: object, entry: str) -> str | type[InvalidAddress]:
    try:
        return key(entry)  # type: ignore[operator]
    except InvalidAddress:
        return InvalidAddress


@settings(max_examples=1500, deadline=None)
@given(st.one_of(emails, numbers, st.text(max_size=40)))
def test_the_import_fast_path_keys_every_entry_as_the_full_parsers_do(entry: str) -> None:
    assert outcome(bulk_key, entry) == outcome(validated_key, entry)


@settings(max_examples=1000, deadline=None)
@given(st.from_regex(r"[2-9][0-9]{2}[2-9][0-9]{6}", fullmatch=True))
def test_a_registry_number_is_the_e164_key_the_gateway_looks_up(digits: str) -> None:
    assert registry_key(digits) == validated_key(f"+1{digits}") == suppression_key(f"+1{digits}")
    assert registry_key(f"({digits[:3]}) {digits[3:6]}-{digits[6:]}") == f"+1{digits}"
