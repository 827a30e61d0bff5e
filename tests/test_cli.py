"""The command line as an operator runs it: real processes against a real store."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import IO

import aiosmtplib
import pytest

from gateway.cli.main import main
from tests.conftest import DEMO_SECRET, write_config
from tests.fakes.smtp_sink import SmtpSink
from tests.ingress.smtp.test_submission import first_touch


def cli(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(config)],
        capture_output=True, text=True, timeout=60, input=stdin,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def test_check_email_allow_block_and_invalid(config: Path) -> None:
    allowed = cli(config, "check", "email", "--to", "bob@client.example.net",
                  "--from", "katie@example.com", "--subject", "Hello")
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["decision"] == "allow"

    blocked = cli(config, "check", "email", "--to", "bob@client.example.net",
                  "--from", "katie@example.com", "--subject", "Re: hello")
    assert blocked.returncode == 1
    decision = json.loads(blocked.stdout)
    assert decision["decision"] == "block"
    assert decision["reasons"][0]["code"] == "DECEPTIVE_SUBJECT"
    assert decision["reasons"][0]["rule"] == "email.subject.deceptive"
    assert decision["reasons"][0]["message"]

    foreign = cli(config, "check", "email", "--to", "bob@client.example.net",
                  "--from", "ceo@elsewhere.example.org")
    assert foreign.returncode == 1
    assert "SENDER_NOT_ALLOWED" in foreign.stdout

    unknown_account = cli(config, "check", "email", "--to", "a@b.example.net",
                          "--from", "katie@example.com", "--account", "nobody")
    assert unknown_account.returncode == 2
    assert unknown_account.stderr.count("\n") == 1


def test_suppress_add_list_remove_and_check_sees_it(config: Path) -> None:
    assert cli(config, "suppress", "add", "Bob@Client.Example.NET", "+14155550123").returncode == 0
    listed = cli(config, "suppress", "list").stdout
    assert "bob@client.example.net" in listed
    assert "+14155550123" in listed
    check = cli(config, "check", "email", "--to", "bob@client.example.net",
                "--from", "katie@example.com")
    assert check.returncode == 1
    assert json.loads(check.stdout)["reasons"][0]["code"] == "SUPPRESSED"
    assert cli(config, "suppress", "remove", "bob@client.example.net").returncode == 0
    assert "bob@client.example.net" not in cli(config, "suppress", "list").stdout
    bad = cli(config, "suppress", "add", "not-an-address")
    assert bad.returncode == 2


def test_import_is_all_or_nothing_and_export_round_trips(config: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("address,reason\na@x.example.net,x\nB@X.example.net,y\n+14155550100,z\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("address\nc@x.example.net\nnot valid\nd@x.example.net\n")
    result = cli(config, "suppress", "import", str(bad))
    assert result.returncode == 2
    assert "line 3" in result.stderr
    assert "c@x.example.net" not in cli(config, "suppress", "list").stdout
    assert cli(config, "suppress", "import", str(good)).returncode == 0
    again = cli(config, "suppress", "import", str(good)).stdout
    assert "3 valid (0 new, 3 already present" in again
    rows = list(csv.DictReader(io.StringIO(cli(config, "suppress", "export").stdout)))
    # Formula-safe: a spreadsheet shows the number as text, not as a formula.
    assert sorted(r["address"] for r in rows) == [
        "'+14155550100", "a@x.example.net", "b@x.example.net",
    ]


def test_suppress_export_is_formula_safe_and_imports_back(tmp_path: Path) -> None:
    """Addresses that begin like formulas (`=` and `-` are allowed in a local part) and
    numbers are exported with a leading apostrophe, and `suppress import` of that export
    into another gateway gives the same list."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    exporter, importer = write_config(first), write_config(second)
    entries = ["=cmd@client.example.net", "-dash@client.example.net",
               "'quoted@client.example.net", "+14155550100", "plain@client.example.net"]
    added = subprocess.run(
        [sys.executable, "-m", "gateway", "suppress", "add", "--config", str(exporter), "--",
         *entries],
        capture_output=True, text=True, timeout=60,
    )
    assert added.returncode == 0, added.stderr
    exported = cli(exporter, "suppress", "export").stdout
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert sorted(r["address"] for r in rows) == [
        "'+14155550100", "'-dash@client.example.net", "'=cmd@client.example.net",
        "'quoted@client.example.net", "plain@client.example.net",
    ]
    assert all(row[name][:1] not in "=+-@\t\r" for row in rows for name in row if row[name])
    export_file = tmp_path / "export.csv"
    export_file.write_text(exported)
    imported = cli(importer, "suppress", "import", str(export_file))
    assert imported.returncode == 0, imported.stderr
    assert "5 valid (5 new" in imported.stdout
    listed = list(csv.reader(io.StringIO(cli(importer, "suppress", "list").stdout)))
    assert sorted(row[0] for row in listed) == sorted(r["address"] for r in rows)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServeProcess:
    """`compliance-gateway serve` in its own process, on free loopback ports."""

    def __init__(self, tmp_path: Path, extra: str = "", now: str | None = None,
                 store_url: str | None = None, stderr: IO[str] | int = subprocess.PIPE) -> None:
        """`stderr`: a file for a busy server, whose log lines would fill a pipe nobody
        reads until `stop` and block it."""
        self.smtp_port, self.http_port = free_port(), free_port()
        self.config = write_config(tmp_path, extra)
        text = self.config.read_text()
        if store_url is not None:
            text = text.replace('url = "sqlite:///var/gateway.db"', f'url = "{store_url}"')
        smtp_listen = f'listen = "127.0.0.1:{self.smtp_port}"\nmax'
        http_listen = f'[http]\nlisten = "127.0.0.1:{self.http_port}"'
        text = text.replace('listen = "127.0.0.1:0"\nmax', smtp_listen)
        text = text.replace('[http]\nlisten = "127.0.0.1:0"', http_listen)
        self.config.write_text(text)
        args = [sys.executable, "-m", "gateway", "serve", "--config", str(self.config)]
        if now:
            args += ["--now", now]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, text=True)
        self.banner = self.process.stdout.readline()

    def stop(self) -> tuple[int, str]:
        """The exit status, and stderr unless it went to a file."""
        self.process.send_signal(signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=30)
        return self.process.returncode, stderr or ""


def test_serve_prints_where_it_listens_and_blocks_cli_reads_the_log(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path, now="2026-06-01T15:00:00Z")
    try:
        assert f"SMTP 127.0.0.1:{server.smtp_port}" in server.banner
        assert f"HTTP 127.0.0.1:{server.http_port}" in server.banner

        async def send_blocked() -> None:
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.smtp_port)
            await smtp.connect()
            await smtp.login("demo", DEMO_SECRET)
            with pytest.raises(aiosmtplib.SMTPDataError):
                await smtp.send_message(first_touch(subject="Fwd: pricing"))
            await smtp.quit()

        asyncio.run(send_blocked())
    finally:
        code, stderr = server.stop()
    assert code == 0
    assert "clock shifted" in stderr
    records = json.loads(cli(server.config, "blocks").stdout)
    assert len(records) == 1
    record = records[0]
    assert record["reasons"] == ["DECEPTIVE_SUBJECT"]
    assert record["channel"] == "email"
    assert record["account"] == "demo"
    assert record["recipient"] == "bob@client.example.net"
    assert record["time"].startswith("2026-06-01T15:00")
    assert record["rules_version"]
    assert json.loads(cli(server.config, "blocks", "--reason", "SUPPRESSED").stdout) == []
    table = cli(server.config, "blocks", "--format", "csv").stdout
    assert next(iter(csv.DictReader(io.StringIO(table))))["reasons"] == "DECEPTIVE_SUBJECT"
    for line in stderr.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            assert DEMO_SECRET not in line
            assert "event" in entry


def test_sigterm_lets_a_transaction_in_flight_finish(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, str, int]:
        async with SmtpSink() as sink:
            extra = f"""
            [upstream.email]
            kind = "smtp"
            host = "127.0.0.1"
            port = {sink.port}
            starttls = false
            """
            server = await asyncio.to_thread(ServeProcess, tmp_path, extra)
            sink.stall_next("data", 1.5)
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.smtp_port, timeout=20)
            await smtp.connect()
            await smtp.login("demo", DEMO_SECRET)
            sending = asyncio.create_task(smtp.send_message(first_touch()))
            while not sink.messages:
                await asyncio.sleep(0.02)
            server.process.send_signal(signal.SIGTERM)
            _, reply = await sending
            code = await asyncio.to_thread(server.process.wait, 30)
            return code, reply, len(sink.accepted)

    code, reply, accepted = asyncio.run(scenario())
    assert reply.startswith("2.0.0 OK")
    assert accepted == 1
    assert code == 0


def test_audit_verify_detects_tampering(tmp_path: Path, config: Path) -> None:
    assert cli(config, "suppress", "add", "a@x.example.net").returncode == 0
    assert cli(config, "suppress", "add", "b@x.example.net").returncode == 0
    ok = cli(config, "audit", "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "verified: 2 entries, chain intact" in ok.stdout
    database = tmp_path / "var" / "gateway.db"
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE audit SET actor = 'someone else' WHERE id = 1")
    tampered = cli(config, "audit", "verify")
    assert tampered.returncode == 1
    assert "entry 1" in tampered.stdout


def test_env_config_is_used_when_no_flag(tmp_path: Path, config: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "suppress", "list"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "GATEWAY_CONFIG": str(config)},
    )
    assert result.returncode == 0
    assert (tmp_path / "var" / "gateway.db").exists()


READ_COMMANDS = [
    ["blocks"], ["blocks", "--format", "table"], ["audit", "list"], ["audit", "verify"],
    ["suppress", "list"], ["suppress", "export"], ["consent", "list", "+14155550123"],
    ["location", "show", "+14155550123"], ["privacy", "export", "bob@client.example.net"],
    ["check", "email", "--to", "bob@client.example.net", "--from", "katie@example.com"],
    ["check", "call", "--to", "+12125550123"], ["check", "sms", "--to", "+12125550123"],
    ["keys", "log-pseudonym", "bob@client.example.net"], ["keys", "rotate-data"],
]


def refusal_without_config(stderr: str, directory: Path) -> None:
    """One line naming every place looked and how to name a file; nothing left behind."""
    assert stderr.count("\n") == 1, stderr
    assert "--config (not given)" in stderr and "$GATEWAY_CONFIG (not set)" in stderr
    assert f"{directory.resolve() / 'gateway.toml'} (no such file)" in stderr
    assert "pass --config FILE or set GATEWAY_CONFIG" in stderr
    assert list(directory.iterdir()) == [], "no database (nor anything else) was created"


@pytest.mark.parametrize("args", READ_COMMANDS, ids=" ".join)
def test_a_read_command_without_a_config_file_refuses_and_creates_nothing(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    refusal_without_config(captured.err, tmp_path)
    assert f"'{' '.join(a for a in args[:2] if not a.startswith('-'))}' reads the store" in (
        captured.err
    )


def test_the_real_cli_refuses_blocks_in_an_empty_directory(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "GATEWAY_CONFIG"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "blocks"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=environment,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    refusal_without_config(result.stderr, tmp_path)


def data_key_config(tmp_path: Path, keys: dict[str, str], active: str) -> Path:
    table = ", ".join(f'{key_id} = "{key}"' for key_id, key in keys.items())
    return write_config(
        tmp_path, f'[encryption]\nenabled = true\nkeys = {{ {table} }}\nactive = "{active}"\n'
    )


def test_keys_rotate_data_reseals_under_the_new_key_and_retires_the_old(tmp_path: Path) -> None:
    k1, k2 = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    first = data_key_config(tmp_path, {"k1": k1}, "k1")
    assert cli(first, "suppress", "add", "Bob@Client.Example.NET").returncode == 0

    both = data_key_config(tmp_path, {"k1": k1, "k2": k2}, "k2")
    rotated = cli(both, "keys", "rotate-data")
    assert rotated.returncode == 0, rotated.stderr
    assert "suppressions: 1/1 rows" in rotated.stderr
    assert "under data key k2; retired: k1" in rotated.stdout.splitlines()[-1]

    only_new = data_key_config(tmp_path, {"k2": k2}, "k2")
    assert "bob@client.example.net" in cli(only_new, "suppress", "list").stdout
    actions = cli(only_new, "audit", "list").stdout
    assert "data-key.rotation-started" in actions and "data-key.rotation-finished" in actions
    files = list((tmp_path / "var").glob("*.db*"))
    assert files, "the store's SQLite file"
    database = b"".join(path.read_bytes() for path in files)
    assert b"bob@client" not in database.lower()

    off = "[encryption]\nenabled = false\n"
    refused = cli(write_config(tmp_path, off), "keys", "rotate-data")
    assert refused.returncode == 2 and "encryption.enabled" in refused.stderr
    unkeyed = cli(write_config(tmp_path), "keys", "rotate-data")
    assert unkeyed.returncode == 2 and "encryption.keys.k2" in unkeyed.stderr
    assert not (tmp_path / "var" / "data-keys.json").exists()
    plain = tmp_path / "plain"
    plain.mkdir()
    nothing = cli(write_config(plain, off), "keys", "rotate-data")
    assert nothing.returncode == 2 and "nothing to rotate" in nothing.stderr


def test_keys_log_pseudonym_names_a_person_as_the_logs_do_across_data_key_rotation(
    tmp_path: Path,
) -> None:
    """The pseudonym is keyed by the store's index key, which rotating data keys leaves as
    it is: a log searched before and after a rotation finds the same person."""
    k1, k2 = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    first = data_key_config(tmp_path, {"k1": k1}, "k1")
    before = cli(first, "keys", "log-pseudonym", "Bob@Client.Example.NET", "+12125550142")
    assert before.returncode == 0, before.stderr
    bob, number = before.stdout.split()
    spelled = cli(first, "keys", "log-pseudonym", "+1 (212) 555-0142")
    assert spelled.stdout.split() == [number]  # as the logs carry it: E.164
    assert bob.startswith("pseudonym:") and number.startswith("pseudonym:") and bob != number
    assert "client" not in before.stdout.lower() and "5550142" not in before.stdout

    both = data_key_config(tmp_path, {"k1": k1, "k2": k2}, "k2")
    assert cli(both, "keys", "rotate-data").returncode == 0
    after = cli(both, "keys", "log-pseudonym", "bob@client.example.net")
    assert after.stdout.split() == [bob]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other_store = cli(data_key_config(elsewhere, {"k1": k1}, "k1"), "keys", "log-pseudonym",
                      "bob@client.example.net")
    assert other_store.returncode == 0 and other_store.stdout.split() != [bob]

    plain = tmp_path / "plain"
    plain.mkdir()
    off = cli(write_config(plain, "[encryption]\nenabled = false\n"), "keys", "log-pseudonym",
              "bob@client.example.net")
    assert off.returncode == 2 and "recipients as they are" in off.stderr


def test_a_command_imports_neither_scim_nor_the_callee_location_data() -> None:
    """Each is imported where it is used (a gateway with SCIM configured; one about to
    serve, or a command that locates a number): together they were a second of every
    command's start."""
    probe = (
        "import sys, gateway.cli.main, gateway.server; "
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith("
        "('scim2', 'timezonefinder', 'phonenumbers.geocoder', 'phonenumbers.geodata'))}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"


FAULTING = """
import importlib
import sys

cli_main = importlib.import_module("gateway.cli.main")  # `gateway.cli.main` is a function too
runner, raised, *argv = sys.argv[1:]


def fault(*args):
    raise eval(raised)


setattr(cli_main, runner, fault)
sys.exit(cli_main.main(argv))
"""
ODD = "RuntimeError('the store answered oddly about bob@client.example.net')"


def faulting(config: Path, runner: str, raised: str, *command: str,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command with `runner` (a name gateway/cli/main.py calls) raising `raised`."""
    return subprocess.run(
        [sys.executable, "-c", FAULTING, runner, raised, *command, "--config", str(config)],
        capture_output=True, text=True, timeout=60, env=env,
    )


@pytest.mark.parametrize(("runner", "command", "raised"), [
    ("run_keys", ("keys", "list"), ODD),
    ("run_rules", ("rules", "table"), ODD),
    ("serve_forever", ("serve",), ODD),
    # OSErrors that are no failed output: a timeout, a reset, a file the host lacks while
    # serving (its log is JSON lines, so not an `error:` line either)
    ("run_keys", ("keys", "list"), "TimeoutError('bob@client.example.net took too long')"),
    ("run_keys", ("keys", "list"), "ConnectionResetError(104, 'reset by bob@client.example.net')"),
    ("serve_forever", ("serve",), "OSError(28, 'No space for bob@client.example.net')"),
    # a broken pipe to something else than stdout (an upstream, a database)
    ("run_keys", ("keys", "list"), "BrokenPipeError(32, 'pipe to bob@client.example.net')"),
])
def test_a_fault_of_the_gateway_is_one_json_line_naming_nobody(
    config: Path, runner: str, command: tuple[str, ...], raised: str
) -> None:
    """Not Python's bare traceback: that is outside the log's JSON lines and quotes values
    in clear. Its exit status is neither allow, block, invalid input, store unavailable nor
    failed output. `keys` opens the store first, and with it the pseudonyms; `rules` reads
    files only."""
    faulted = faulting(config, runner, raised, *command)
    assert faulted.returncode == 70, faulted.stderr
    (line,) = [json.loads(line) for line in faulted.stderr.splitlines()]
    assert (line["event"], line["level"], line["command"]) == (
        "command-failed", "critical", command[0])
    assert raised.split("(")[0] + ": " in line["exception"]
    if command[0] == "keys":
        (pseudonym,) = cli(config, "keys", "log-pseudonym", "bob@client.example.net"
                           ).stdout.split()
        assert "bob@" not in line["exception"] and pseudonym in line["exception"]


UNBUFFERED = [None, {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}]
"""As this machine runs commands (PYTHONUNBUFFERED=1), and with stdout buffered, so that
the failed write comes at the final flush."""


@pytest.mark.parametrize("env", UNBUFFERED, ids=["as-is", "buffered"])
@pytest.mark.parametrize("stderr_too", [False, True], ids=["stderr-apart", "stderr-full-too"])
def test_output_that_cannot_be_written_is_one_line_and_exit_74(
    config: Path, env: dict[str, str] | None, stderr_too: bool
) -> None:
    """A full disk is the host's trouble, not a fault of the gateway to report as one, and
    not Python's report of a failed flush at exit either; with stderr on the full disk
    too, nothing can be said and the status alone tells."""
    with open("/dev/full", "w") as full:
        written = subprocess.run(
            [sys.executable, "-m", "gateway", "rules", "table", "--config", str(config)],
            stdout=full, stderr=full if stderr_too else subprocess.PIPE, text=True,
            timeout=60, env=env,
        )
    assert written.returncode == 74, written.stderr
    if not stderr_too:
        assert written.stderr.splitlines() == ["error: [Errno 28] No space left on device"]


@pytest.mark.parametrize("env", UNBUFFERED, ids=["as-is", "buffered"])
@pytest.mark.parametrize(("runner", "raised", "status"), [
    (None, None, 74),  # the table itself
    ("run_keys", "OSError(28, 'No space left on device')", 74),  # a write of a command's own
])
def test_a_reader_that_went_away_ends_the_command_quietly(
    config: Path, env: dict[str, str] | None, runner: str | None, raised: str | None,
    status: int,
) -> None:
    """`… | head`: the pipe's reading end is closed before the command writes a byte."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    command = (["-c", FAULTING, runner, raised, "keys", "list"] if runner
               else ["-m", "gateway", "rules", "table"])
    try:
        piped = subprocess.run(
            [sys.executable, *command, "--config", str(config)],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, env=env,
        )
    finally:
        os.close(write_end)
    assert piped.returncode == status, piped.stderr
    assert piped.stderr == ("" if runner is None else "error: [Errno 28] No space left on device\n")


@pytest.mark.parametrize("env", UNBUFFERED, ids=["as-is", "buffered"])
def test_a_refusal_keeps_its_status_when_stderr_takes_no_line(
    config: Path, env: dict[str, str] | None
) -> None:
    """Invalid input is exit 2 even with nowhere to say so, not Python's report of the
    failed line (exit 1, or 120 at exit)."""
    with open("/dev/full", "w") as full:
        refused = subprocess.run(
            [sys.executable, "-m", "gateway", "rules", "show", "--jurisdiction", "XX",
             "--config", str(config)],
            stdout=subprocess.PIPE, stderr=full, text=True, timeout=60, env=env,
        )
    assert (refused.returncode, refused.stdout) == (2, "")


def test_a_command_started_with_stdout_closed_runs_without_a_traceback(config: Path) -> None:
    """`… >&-`: Python then has no sys.stdout at all."""
    ran = subprocess.run(
        [sys.executable, "-m", "gateway", "rules", "table", "--config", str(config)],
        stderr=subprocess.PIPE, text=True, timeout=60, preexec_fn=lambda: os.close(1),
    )
    assert (ran.returncode, ran.stderr) == (0, "")
