"""`rules/mailboxes.toml` read into `MailboxRules`: what the shipped file says, errors that
name the file and the key, a provider separator such as "-" folded where a file gives one,
and the generated table of rules/README.md."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.addresses import mailbox_key
from gateway.config.settings import PACKAGE_RULES_DIR
from gateway.rules.errors import RulesError
from gateway.rules.mailbox_loader import MAILBOX_FILE, load_mailbox_rules
from gateway.rules.mailboxes import (
    MAILBOX_TABLE_END,
    MAILBOX_TABLE_START,
    Folding,
    mailbox_markdown_table,
)
from gateway.rules.report import TABLE_COMMAND, replace_section

SHIPPED = load_mailbox_rules(PACKAGE_RULES_DIR)


def test_the_shipped_rules() -> None:
    assert SHIPPED.default.separators == ("+",)
    assert SHIPPED.for_domain("gmail.com") == Folding("gmail.com", ("+",), ".")
    assert SHIPPED.for_domain("googlemail.com") == Folding("gmail.com", ("+",), ".")
    assert SHIPPED.for_domain("pm.me") == Folding("proton.me", ("+",), ".-_")
    assert SHIPPED.for_domain("mac.com") == Folding("icloud.com", ("+",), "")
    assert SHIPPED.for_domain("example.com") == Folding("", ("+",), "")
    for provider in SHIPPED.providers:
        assert provider.canonical_domain in provider.domains
        assert provider.source.citation and provider.source.checked
        assert provider.source.verify == (provider.source.confidence == "med")


def test_the_version_changes_with_what_changes_a_key_only(tmp_path: Path) -> None:
    directory = copied(tmp_path)
    text = (directory / MAILBOX_FILE).read_text()
    (directory / MAILBOX_FILE).write_text(text.replace('name = "Gmail"', 'name = "Google Mail"'))
    assert load_mailbox_rules(directory).version == SHIPPED.version
    (directory / MAILBOX_FILE).write_text(text.replace('ignored = ["."]', "ignored = []"))
    assert load_mailbox_rules(directory).version != SHIPPED.version


def test_a_provider_separator_is_folded_with_the_default(tmp_path: Path) -> None:
    """Where a provider documents "user-tag", a file may say so: "-" then ends the user part
    at its domains (and "+" still does)."""
    directory = copied(tmp_path)
    with (directory / MAILBOX_FILE).open("a") as file:
        file.write(PROVIDER.format(extra='separators = ["-"]\nignored = []\n'))
    rules = load_mailbox_rules(directory)
    assert rules.for_domain("dash.example").separators == ("+", "-")
    assert mailbox_key("Ann-shop@dash.example", rules) == "ann@dash.example"
    assert mailbox_key("ann+x-y@dash.example", rules) == "ann@dash.example"
    assert mailbox_key("ann-shop@example.com", rules) == "ann-shop@example.com"


PROVIDER = '''
[[provider]]
name = "Dash"
domains = ["dash.example", "dash2.example"]
canonical_domain = "dash.example"
citation = "https://dash.example/help"
confidence = "high"
checked = 2026-12-06
{extra}'''


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('separators = ["."]\nignored = []\n', "provider[3].separators has '.'"),
        ('separators = ["@"]\nignored = []\n', "provider[3].separators has '@'"),
        ('separators = []\nignored = ["+"]\n', "provider[3].ignored has '+', which is also a"),
        ('separators = []\nignored = ["ab"]\n', "provider[3].ignored has 'ab', not one"),
        ('separators = []\nignored = []\nverify = true\n', "provider[3].verify must be true"),
        ("separators = []\nignored = []\nsince = \"2020\"\n", "provider[3].since must be a date"),
        ("separators = []\nignored = []\nfolds = true\n", "provider[3].folds is not a known key"),
        ('ignored = "."\n', "provider[3].ignored must be a list"),
    ],
)
def test_provider_errors_name_the_file_and_key(tmp_path: Path, extra: str, message: str) -> None:
    directory = copied(tmp_path)
    with (directory / MAILBOX_FILE).open("a") as file:
        file.write(PROVIDER.format(extra=extra))
    with pytest.raises(RulesError) as error:
        load_mailbox_rules(directory)
    assert str(error.value).startswith(f"{directory / MAILBOX_FILE}: ")
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('"gmail.com", "googlemail.com"]', '"gmail.com", "me.com"]', "domains repeats 'me.com'"),
        ('canonical_domain = "gmail.com"', 'canonical_domain = "google.com"',
         "provider[0].canonical_domain 'google.com' must be one of domains"),
        ('domains = ["gmail.com"', 'domains = ["Gmail.com"',
         "provider[0].domains has 'Gmail.com', not a lower-case domain name"),
        ('separators = ["+"]', "separators = []", "default.separators must not be empty"),
        ('checked = 2026-12-06\nnote = "\'+\'', 'note = "\'+\'', "default.checked must be a date"),
        ('confidence = "high"\nchecked = 2026-12-06\nnote = "\'+\'',
         'confidence = "low"\nchecked = 2026-12-06\nnote = "\'+\'',
         "default.confidence must be one of"),
    ],
)
def test_shipped_file_edits_are_checked(tmp_path: Path, old: str, new: str, message: str) -> None:
    directory = copied(tmp_path)
    text = (directory / MAILBOX_FILE).read_text()
    assert old in text
    (directory / MAILBOX_FILE).write_text(text.replace(old, new, 1))
    with pytest.raises(RulesError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_mailbox_rules(directory)


def test_rules_readme_mailbox_table_matches_the_rules() -> None:
    readme = (PACKAGE_RULES_DIR / "README.md").read_text(encoding="utf-8")
    current = replace_section(
        readme, mailbox_markdown_table(SHIPPED), MAILBOX_TABLE_START, MAILBOX_TABLE_END,
        MAILBOX_FILE,
    )
    assert current == readme, f"rules/README.md's mailbox table is stale: run `{TABLE_COMMAND}`"


def test_the_table_names_every_domain_and_citation() -> None:
    table = mailbox_markdown_table(SHIPPED)
    for provider in SHIPPED.providers:
        row = next(line for line in table.splitlines() if line.startswith(f"| {provider.name} |"))
        assert all(domain in row for domain in provider.domains)
        assert provider.source.citation.split(" (")[0] in row


def copied(tmp_path: Path) -> Path:
    directory = tmp_path / "rules"
    shutil.copytree(PACKAGE_RULES_DIR, directory)
    return directory
