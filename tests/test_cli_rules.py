"""`rules show` and `rules table` as a reviewer and a maintainer run them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gateway.config.settings import PACKAGE_RULES_DIR
from gateway.rules.calling_loader import load_calling_rules
from gateway.rules.mailbox_loader import load_mailbox_rules
from gateway.rules.mailboxes import MAILBOX_TABLE_END, MAILBOX_TABLE_START, mailbox_markdown_table
from gateway.rules.report import TABLE_END, TABLE_START, markdown_table
from tests.conftest import write_config
from tests.test_cli import cli


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def test_oregon_hb_3865_is_in_force_from_2026(config: Path) -> None:
    before = cli(config, "rules", "show", "--jurisdiction", "US-OR", "--at", "2025-12-31")
    assert before.returncode == 0, before.stderr
    assert "nothing in force on 2025-12-31" in before.stdout
    assert "state.OR.window: hours Mon-Sun 08:00-20:00; from 2026-01-01" in before.stdout

    after = cli(config, "rules", "show", "--jurisdiction", "or", "--at", "2026-01-01")
    assert after.returncode == 0, after.stderr
    assert "hours           Mon-Sun 08:00-20:00" in after.stdout
    assert "cap             3 per 24 h" in after.stdout
    assert "citation: Or. HB 3865" in after.stdout
    assert "not in force" not in after.stdout
    assert "US-TX" not in after.stdout


def test_without_a_filter_every_jurisdiction_national_first(config: Path) -> None:
    result = cli(config, "rules", "show", "--at", "2026-01-01")
    assert result.returncode == 0, result.stderr
    headings = [line.split()[0] for line in result.stdout.splitlines()
                if line and not line.startswith((" ", "Calling"))]
    assert headings[:2] == ["US", "CA"]
    assert headings[2:] == sorted(headings[2:])
    assert {"US-OR", "US-TX", "CA-BC"} <= set(headings)


def test_json_report(config: Path) -> None:
    result = cli(config, "rules", "show", "--jurisdiction", "Texas", "--at", "2025-08-31",
                 "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    (texas,) = data["jurisdictions"]
    assert data["at"] == "2025-08-31"
    assert texas["jurisdiction"] == "US-TX"
    assert {r["id"] for r in texas["not_in_force"]} == {
        "state.TX.text_window", "state.TX.text_sunday_window"
    }
    assert texas["hours"][6]["windows"] == [
        {"hours": "12:00-21:00", "channels": ["call"], "rules": ["state.TX.sunday_window"]}
    ]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("show", "--jurisdiction", "US-XX"), "'US-XX'"),
        (("show", "--at", "2026-02-30"), "'2026-02-30'"),
        (("show", "--at", "tomorrow"), "'tomorrow'"),
        (("show", "--format", "xml"), "xml"),
        (("list",), "list"),
    ],
)
def test_invalid_input_is_exit_2_with_one_line(config: Path, args, named: str) -> None:
    result = cli(config, "rules", *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert named in result.stderr
    assert result.stdout == ""


def test_table_prints_and_writes_the_rules_readme(tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    shutil.copytree(PACKAGE_RULES_DIR, rules_dir)
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace(
        "[gateway]\n", f'[gateway]\nrules_dir = "{rules_dir}"\n', 1
    ))
    table = markdown_table(load_calling_rules(rules_dir))

    printed = cli(config, "rules", "table")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == table

    readme = rules_dir / "README.md"
    mailboxes = mailbox_markdown_table(load_mailbox_rules(rules_dir))
    readme.write_text(
        f"# Rules\n\n{TABLE_START}\nold\n{TABLE_END}\n\n"
        f"{MAILBOX_TABLE_START}\nold\n{MAILBOX_TABLE_END}\n\nmore\n"
    )
    written = cli(config, "rules", "table", "--write")
    assert written.returncode == 0, written.stderr
    assert "rewritten" in written.stdout
    text = readme.read_text()
    assert table in text and mailboxes in text and "old" not in text
    assert text.endswith(f"{MAILBOX_TABLE_END}\n\nmore\n")
    again = cli(config, "rules", "table", "--write")
    assert "already current" in again.stdout
    assert readme.read_text() == text

    readme.write_text("# Rules without a generated section\n")
    missing = cli(config, "rules", "table", "--write")
    assert missing.returncode == 2
    assert "rules-table:start" in missing.stderr

    readme.write_text(f"# Rules\n\n{TABLE_START}\n{TABLE_END}\n")
    no_mailbox_section = cli(config, "rules", "table", "--write")
    assert no_mailbox_section.returncode == 2
    assert "mailbox-table:start" in no_mailbox_section.stderr
