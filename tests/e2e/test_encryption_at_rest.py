"""Encryption at rest end to end (issue 21): a real `compliance-gateway serve` process on
SQLite and on PostgreSQL, driven as agents, recipients, Twilio and an operator drive it.

After a run of sends over SMTP, the Postmark-shaped API and the Twilio SDK, blocks,
opt-outs (the unsubscribe page's one-click POST, an inbound STOP) and consents, a copy of
the database (SQLite's file with its WAL and shared-memory file, read while the gateway
runs and after it stops; `pg_dump`) holds no recipient, number, subject, display name or
consent evidence, in any spelling, while every CLI and API view shows them. The same run
with `[encryption] enabled = false` is the control: the same checks find them in the copy.

Then keys are rotated while agents send (`keys rotate-data` as an operator runs it):
every send answered and decided as it should be, nothing left under the old key; and a
pass run before the gateway was restarted with the new key must lose nothing either.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import aiohttp
import aiosmtplib
import asyncpg
import pytest
from postmarker.exceptions import ClientError

from gateway.store.sealing import is_sealed, sealed_key_id
from tests.conftest import DEMO_SECRET, write_config
from tests.e2e.test_unsubscribe_flow import local
from tests.ingress.smtp.test_submission import client, first_touch, parsed
from tests.ingress.test_postmark import item, send
from tests.ingress.test_twilio import TWILIO_CONFIG, refused, sdk, send_sms
from tests.postgres_server import PostgresServer
from tests.store.test_store import backend_url
from tests.test_cli import ServeProcess, cli
from tests.web.test_twilio_webhook import inbound, post

# A Tuesday, 16:00 UTC: noon in New York, inside every calling window.
NOW = "2026-06-02T16:00:00+00:00"
ADMIN_SECRET = "admin-secret-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_SECRET}"}
ADMIN_ACCOUNT = f"""
[[accounts]]
name = "ops"
secret = "{ADMIN_SECRET}"
role = "admin"
sender_domains = []
"""


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def encryption(enabled: bool, keys: dict[str, str] | None = None, active: str = "") -> str:
    """The `[encryption]` table, always explicit (the default is changing)."""
    if not enabled:
        return "\n[encryption]\nenabled = false\n"
    table = ", ".join(f'{key_id} = "{key}"' for key_id, key in (keys or {}).items())
    return f'\n[encryption]\nenabled = true\nkeys = {{ {table} }}\nactive = "{active}"\n'


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request, tmp_path)


@dataclass
class Copy:
    """How someone holding a copy of the database reads it, past the gateway."""

    url: str
    postgres: PostgresServer | None

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url.removeprefix("sqlite://"))

    def raw_bytes(self) -> dict[str, bytes]:
        """SQLite: the database file, its WAL and shared-memory file as they are on disk
        now. PostgreSQL: `pg_dump` of the data alone, and the full dump."""
        if self.postgres is None:
            path = self.sqlite_path
            files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
            return {f.name: f.read_bytes() for f in files if f.exists()}
        dump = str(self.postgres.binaries.directory / "pg_dump")
        database, _, query = self.url.partition("?")
        schema = query.removeprefix("search_path=")
        dumps = {}
        for name, flags in (("pg_dump --data-only", ["--data-only"]), ("pg_dump", [])):
            done = subprocess.run([dump, *flags, "-n", schema, "-d", database],
                                  capture_output=True, check=True, timeout=120)
            dumps[name] = done.stdout
        return dumps

    async def sealed_key_ids(self) -> dict[str, set[str | None]]:
        """Per table, the key ids of every sealed value in any column: every table, not
        only the ones the re-sealing pass knows of, so a column it forgets shows here."""
        found: dict[str, set[str | None]] = {}
        for table, rows in (await self._tables()).items():
            ids = {sealed_key_id(cell) for row in rows for cell in row
                   if isinstance(cell, str) and is_sealed(cell)}
            if ids:
                found[table] = ids
        return found

    async def count(self, table: str) -> int:
        return len((await self._tables(table))[table])

    async def _tables(self, only: str | None = None) -> dict[str, list[tuple[object, ...]]]:
        if self.postgres is None:
            with sqlite3.connect(self.sqlite_path) as conn:
                names = [only] if only else [name for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")]
                return {name: conn.execute(f"SELECT * FROM {name}").fetchall()
                        for name in names}
        conn = await asyncpg.connect(self.url)
        try:
            names = [only] if only else [row["tablename"] for row in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
            return {name: [tuple(row) for row in await conn.fetch(f"SELECT * FROM {name}")]
                    for name in names}
        finally:
            await conn.close()


@pytest.fixture
def copy(store_url: str, request: pytest.FixtureRequest) -> Copy:
    postgres = request.getfixturevalue("postgres_server") if store_url.startswith("postgres") \
        else None
    return Copy(store_url, postgres)


def launch(tmp_path: Path, store_url: str, extra: str) -> ServeProcess:
    """`serve` with its log in a file: a busy gateway's log would fill a pipe."""
    with (tmp_path / "serve.log").open("a") as log:
        return ServeProcess(tmp_path, TWILIO_CONFIG + ADMIN_ACCOUNT + extra, now=NOW,
                            store_url=store_url, stderr=log)


def start(tmp_path: Path, store_url: str, extra: str) -> ServeProcess:
    server = launch(tmp_path, store_url, extra)
    assert "listening" in server.banner, (tmp_path / "serve.log").read_text()[-3000:]
    return server


def log_events(tmp_path: Path) -> list[dict]:
    """The JSON lines of every gateway `start` started here."""
    lines = (tmp_path / "serve.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def stop(server: ServeProcess) -> None:
    code, _ = server.stop()
    assert code == 0


@dataclass
class People:
    """Everyone one run writes about; each value holds the run's random marker."""

    marker: str

    def __post_init__(self) -> None:
        m = self.marker
        self.smtp_allowed = f"Ann.{m}+news@Client.Example.NET"
        self.http_allowed = f"bo.{m}@client.example.net"
        self.deceptive = f"cy.{m}@client.example.net"
        self.suppressed = f"Di.{m}@Client.Example.NET"
        self.unsubscriber = f"ed.{m}@client.example.net"
        digits = [f"212555{secrets.randbelow(10_000):04d}" for _ in range(3)]
        self.texted, self.stopped, self.unconsented = (f"+1{d}" for d in digits)
        self.names = {self.smtp_allowed: f"Annabel Q{m}", self.http_allowed: f"Bodo Q{m}"}
        self.subjects = {address: f"Fleet costs for {address.split('.')[0]} {m}"
                         for address in self.emails}
        self.subjects[self.deceptive] = f"Re: our call about {m}"
        self.evidence = f"signed web form {m}"

    @property
    def emails(self) -> tuple[str, ...]:
        return (self.smtp_allowed, self.http_allowed, self.deceptive, self.suppressed,
                self.unsubscriber)

    @property
    def numbers(self) -> tuple[str, ...]:
        return (self.texted, self.stopped, self.unconsented)

    def secrets(self) -> dict[str, str]:
        """What a copy of the database must not show, in every spelling the gateway might
        keep: as written, case-folded, the mailbox key (tag dropped), E.164 and its digits."""
        found = {"marker": self.marker}
        for address in self.emails:
            found[f"address {address}"] = address
            found[f"mailbox of {address}"] = re.sub(r"\+[^@]*", "", address).lower()
        for address, name in self.names.items():
            found[f"display name of {address}"] = name
        for address, subject in self.subjects.items():
            found[f"subject to {address}"] = subject
        for number in self.numbers:
            found[f"number {number}"] = number
            found[f"digits of {number}"] = number.removeprefix("+1")
        found["consent evidence"] = self.evidence
        return found


class PlaintextInCopy(AssertionError):
    """A copy of the database shows personal data."""


def shown(raw: dict[str, bytes], wanted: dict[str, str]) -> dict[str, list[str]]:
    """Per file or dump, the secrets it shows in any case."""
    return {name: found for name, data in raw.items()
            if (found := [what for what, value in wanted.items()
                          if value.casefold().encode() in data.lower()])}


def outbox_message_to(tmp_path: Path, address: str) -> bytes:
    """The copy the outbox upstream wrote for `address` (the gateway's data_dir is var/)."""
    for path in sorted((tmp_path / "var" / "outbox" / "email").glob("*.eml")):
        raw = path.read_bytes()
        if address.lower() in parsed(raw)["To"].lower():
            return raw
    raise AssertionError(f"no copy to {address} in the outbox")


async def one_click_opt_out(server: ServeProcess, tmp_path: Path, address: str) -> None:
    """The recipient opens the link of the List-Unsubscribe header, then the mail reader
    posts the one-click form (RFC 8058)."""
    header = parsed(outbox_message_to(tmp_path, address))["List-Unsubscribe"]
    https = re.findall(r"<(https://[^>]+)>", header)[0]
    async with aiohttp.ClientSession() as http:
        async with http.get(local(server, https)) as page:  # type: ignore[arg-type]
            assert page.status == 200 and address.lower() in (await page.text()).lower()
        async with http.post(local(server, https),  # type: ignore[arg-type]
                             data={"List-Unsubscribe": "One-Click"}) as done:
            assert done.status == 200


async def suppress(server: ServeProcess, *addresses: str) -> None:
    """As an operator does through the admin API."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{server.http_port}/v1/suppressions",
                             json={"addresses": list(addresses), "reason": "asked by phone"},
                             headers=ADMIN) as response:
            assert response.status == 200, await response.text()


def import_consents(server: ServeProcess, tmp_path: Path, numbers: tuple[str, ...],
                    evidence: str) -> None:
    """`consent import` of written consents to texts, as an operator runs it."""
    consents = tmp_path / "consents.csv"
    consents.write_text("subject,channel,kind,obtained_at,source,evidence\n" + "".join(
        f"{number},sms,express-written,2025-01-01T00:00:00+00:00,web,{evidence}\n"
        for number in numbers))
    imported = cli(server.config, "consent", "import", str(consents))
    assert imported.returncode == 0, imported.stderr


async def run_traffic(server: ServeProcess, tmp_path: Path, people: People) -> None:
    """Sends, blocks, opt-outs and consents, each through the path an agent, a recipient,
    Twilio or an operator takes."""
    smtp = await client(server)  # type: ignore[arg-type]
    for address in (people.smtp_allowed, people.unsubscriber):
        to = f'"{people.names[address]}" <{address}>' if address in people.names else address
        errors, reply = await smtp.send_message(first_touch(to, people.subjects[address]))
        assert errors == {} and reply.startswith("2.0.0"), reply
    with pytest.raises(aiosmtplib.SMTPDataError) as deceptive:
        await smtp.send_message(first_touch(people.deceptive, people.subjects[people.deceptive]))
    assert "DECEPTIVE_SUBJECT" in deceptive.value.message
    await smtp.quit()

    name = people.names[people.http_allowed]
    answer = await send(server, To=f'"{name}" <{people.http_allowed}>',  # type: ignore[arg-type]
                        Subject=people.subjects[people.http_allowed])
    assert answer["ErrorCode"] == 0
    await suppress(server, people.suppressed)
    with pytest.raises(ClientError) as blocked:
        await send(server, To=people.suppressed,  # type: ignore[arg-type]
                   Subject=people.subjects[people.suppressed])
    assert blocked.value.error_code == 406

    await one_click_opt_out(server, tmp_path, people.unsubscriber)
    smtp = await client(server)  # type: ignore[arg-type]
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused_rcpt:
        await smtp.send_message(first_touch(people.unsubscriber, "Did you mean it?"))
    await smtp.quit()
    assert "SUPPRESSED" in refused_rcpt.value.recipients[0].message

    import_consents(server, tmp_path, (people.texted, people.stopped), people.evidence)
    twilio = sdk(server)  # type: ignore[arg-type]
    assert (await send_sms(twilio, to=people.texted)).status == "queued"
    status, reply = await post(server, inbound("STOP", sender=people.stopped))  # type: ignore[arg-type]
    assert status == 200 and "<Message>" in reply
    for number, code in ((people.stopped, "SUPPRESSED"), (people.unconsented, "CONSENT")):
        error = await refused(send_sms(twilio, to=number))
        assert code in str(error), error


async def api(server: ServeProcess, path: str, **params: str) -> dict:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{server.http_port}{path}", params=params,
                            headers=ADMIN) as response:
            assert response.status == 200, (path, await response.text())
            return await response.json()


def folded(pairs: object) -> set[tuple[str, ...]]:
    return {tuple(str(value).lower() for value in pair) for pair in pairs}  # type: ignore[attr-defined]


async def api_shows_everyone(server: ServeProcess, people: People) -> None:
    """The admin API reads every value back in clear, and searches sealed text."""
    decisions = (await api(server, "/v1/decisions", limit="100"))["decisions"]
    expected = {(address, subject) for address, subject in people.subjects.items()}
    expected |= {(number, "") for number in people.numbers}
    assert folded((d["recipient"], d["subject"]) for d in decisions) >= folded(expected)
    # The marker sits in every email's subject and recipient: sealed text is searched.
    searched = (await api(server, "/v1/decisions", q=people.marker))["decisions"]
    assert folded(d["recipient"] for d in searched) == folded(people.emails)
    found = (await api(server, "/v1/decisions", recipient=people.marker.upper()))["decisions"]
    assert len(found) == len(people.emails) + 1  # the unsubscriber's refused second message

    blocked = {people.deceptive, people.suppressed, people.unsubscriber, people.stopped,
               people.unconsented}
    blocks = (await api(server, "/v1/blocks"))["blocks"]
    assert folded(b["recipient"] for b in blocks) == folded(blocked)
    subjects = {b["recipient"].lower(): b["subject"] for b in blocks}
    assert subjects[people.deceptive] == people.subjects[people.deceptive]

    suppressions = (await api(server, "/v1/suppressions"))["suppressions"]
    assert folded(s["address"] for s in suppressions) == folded(
        (people.suppressed, people.unsubscriber, people.stopped))

    exported = await api(server, f"/v1/privacy/{quote(people.texted)}")
    assert [c["evidence"] for c in exported["consents"]] == [people.evidence]
    assert [d["recipient"] for d in exported["decisions"]] == [people.texted]


def cli_json(server: ServeProcess, *args: str) -> object:
    done = cli(server.config, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def cli_shows_everyone(server: ServeProcess, people: People) -> None:
    """The command line reads every value back in clear."""
    blocks = cli_json(server, "blocks")
    assert folded((b["recipient"], b["subject"]) for b in blocks) == folded({  # type: ignore[attr-defined]
        (people.deceptive, people.subjects[people.deceptive]),
        (people.suppressed, people.subjects[people.suppressed]),
        (people.unsubscriber, ""),  # refused at RCPT, before any subject
        (people.stopped, ""), (people.unconsented, ""),
    })
    listed = cli(server.config, "suppress", "list")
    assert listed.returncode == 0, listed.stderr
    assert {row[0].lstrip("'") for row in csv.reader(io.StringIO(listed.stdout))} == {
        people.suppressed.lower(), people.unsubscriber, people.stopped}
    consents = cli_json(server, "consent", "list", *people.numbers)
    assert [(c["subject"], c["evidence"]) for c in consents] == [  # type: ignore[attr-defined]
        (people.texted, people.evidence), (people.stopped, people.evidence)]
    export = cli_json(server, "privacy", "export", people.smtp_allowed)
    assert [d["subject"] for d in export["decisions"]] == [  # type: ignore[index]
        people.subjects[people.smtp_allowed]]
    assert [d["recipient"] for d in export["deliveries"]] == [people.smtp_allowed]  # type: ignore[index]


@pytest.mark.parametrize("sealing", [
    pytest.param(True, id="sealed"),
    pytest.param(False, id="control-in-clear"),
])
async def test_a_copy_of_the_store_shows_nobody_while_every_view_does(
    store_url: str, copy: Copy, tmp_path: Path, sealing: bool
) -> None:
    """The control (`enabled = false`) runs the same checks and finds every value in the
    copy: they would catch sealing switched off. Display names are kept nowhere, sealed or
    not (the recipient is its address), so the control does not ask for them."""
    people = People("zq" + secrets.token_hex(4))
    server = start(tmp_path, store_url, encryption(sealing, {"k1": new_key()}, "k1"))
    try:
        await run_traffic(server, tmp_path, people)
        while_running = copy.raw_bytes()
        await api_shows_everyone(server, people)
    finally:
        stop(server)
    after_stop = copy.raw_bytes()
    cli_shows_everyone(server, people)

    if copy.postgres is None:
        # Read while serving: the WAL held the writes not yet checkpointed into the file.
        assert while_running.get("gateway.db-wal"), while_running.keys()
    wanted = people.secrets()
    log = {"log": (tmp_path / "serve.log").read_bytes()}
    if not sealing:
        assert await copy.sealed_key_ids() == {}
        in_clear = {what for what, value in wanted.items()
                    if not what.startswith(("display name", "mailbox of"))}
        (found,) = shown({"copy": b"".join(after_stop.values())}, wanted).values()
        assert set(found) >= in_clear
        (logged,) = shown(log, wanted).values()
        assert set(logged) >= {f"number {people.texted}", f"number {people.stopped}",
                               f"address {people.http_allowed}", f"address {people.suppressed}"}
        return
    assert not shown(log, wanted)
    named = {e["recipient"] for e in log_events(tmp_path) if e.get("recipient")}
    asked = cli(server.config, "keys", "log-pseudonym", people.texted, people.stopped,
                people.http_allowed.upper())
    assert asked.returncode == 0, asked.stderr
    assert set(asked.stdout.split()) <= named  # delivered, opted out, delivered
    assert {table for table, ids in (await copy.sealed_key_ids()).items() if ids == {"k1"}} >= {
        "decisions", "blocks", "audit", "suppressions", "consents", "deliveries"}
    for when, raw in (("while serving", while_running), ("after stopping", after_stop)):
        if leaks := shown(raw, wanted):
            raise PlaintextInCopy(f"{when}: {leaks}")


# --- rotation under load ------------------------------------------------------------------

IN_FLIGHT = 16
"""Sends open at once: the load is bounded to one send started per millisecond, and to
this many waiting for their answer."""
SUPPRESSED_EVERY = 10
BEFORE_ROTATION = 1_050
"""Sent under k1 alone: more than one re-sealing batch (1000 rows) of decisions."""
MOST_SENDS = 30_000


@dataclass
class Load:
    """Every send made and the answer it got: (recipient, HTTP status, Postmark ErrorCode)."""

    marker: str
    suppressed: tuple[str, ...]
    answers: list[tuple[str, int, int]] = field(default_factory=list)
    started: int = 0

    def recipient(self, n: int) -> str:
        if n % SUPPRESSED_EVERY == 0:
            return self.suppressed[n // SUPPRESSED_EVERY % len(self.suppressed)]
        return f"load{n}.{self.marker}@client.example.net"

    async def send(self, server: ServeProcess, count: int,
                   until: asyncio.Event | None = None) -> None:
        """`count` sends over the Postmark-shaped API, at most one started per millisecond;
        with `until`, going on past `count` (up to MOST_SENDS) until it is set."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        open_slots = asyncio.Semaphore(IN_FLIGHT)
        url = f"http://127.0.0.1:{server.http_port}/email"

        async def one(http: aiohttp.ClientSession, n: int) -> None:
            """With an idempotency key, as a careful agent sends: the delivery ledger
            keeps the recipient too."""
            recipient = self.recipient(n)
            headers = {"X-Postmark-Server-Token": DEMO_SECRET,
                       "X-Idempotency-Key": f"{self.marker}-{n}"}
            try:
                body = item(To=recipient, Subject=f"Fleet costs {self.marker}")
                async with http.post(url, json=body, headers=headers) as response:
                    answer = await response.json()
                    self.answers.append((recipient, response.status, answer["ErrorCode"]))
            finally:
                open_slots.release()

        async with aiohttp.ClientSession() as http, asyncio.TaskGroup() as sends:
            for n in range(MOST_SENDS):
                if n >= count and (until is None or until.is_set()):
                    break
                await asyncio.sleep(max(0.0, began + n / 1000 - loop.time()))
                await open_slots.acquire()
                sends.create_task(one(http, self.started))
                self.started += 1


async def outcomes(server: ServeProcess) -> list[tuple[str, str]]:
    """(recipient, outcome) of every decision, from the API's CSV export of the whole log."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{server.http_port}/v1/decisions",
                            params={"format": "csv"}, headers=ADMIN) as response:
            assert response.status == 200
            rows = list(csv.DictReader(io.StringIO(await response.text())))
    return [(row["recipient"], row["outcome"]) for row in rows]


async def test_rotating_data_keys_under_load_loses_nothing(
    store_url: str, copy: Copy, tmp_path: Path
) -> None:
    """What an operator does (README, Rotating): add k2 beside k1 and make it active,
    restart the gateway, then run `keys rotate-data` while agents keep sending; once it
    reports k1 retired, drop k1 from the configuration and restart.

    A gateway seals under the active key it started with, so the restart comes before the
    pass: a gateway still sealing under k1 while the pass runs would leave rows under k1
    behind it. A single gateway cannot serve across its own restart, so the load starts
    once it is back (with replicas, they restart one at a time); the gateway started with
    k2 active begins its own background pass at start-up too, so two passes and the load
    meet. Sends start at most one per millisecond, a tenth to suppressed addresses."""
    k1, k2 = new_key(), new_key()
    load = Load("zq" + secrets.token_hex(4),
                tuple(f"optout{n}.zq@client.example.net" for n in range(50)))
    server = start(tmp_path, store_url, encryption(True, {"k1": k1}, "k1"))
    numbers = tuple(f"+1212555{n:04d}" for n in range(3))
    try:
        await suppress(server, *load.suppressed)
        import_consents(server, tmp_path, numbers, load.marker)
        await load.send(server, BEFORE_ROTATION)
    finally:
        stop(server)
    assert all(ids == {"k1"} for ids in (await copy.sealed_key_ids()).values())

    server = start(tmp_path, store_url, encryption(True, {"k1": k1, "k2": k2}, "k2"))
    try:
        rotated = asyncio.Event()
        sending = asyncio.create_task(load.send(server, BEFORE_ROTATION + 200, rotated))
        while load.started < BEFORE_ROTATION + 200:
            await asyncio.sleep(0.01)
        rotation = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "keys", "rotate-data", "--config",
            str(server.config), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(rotation.communicate(), 600)
        during = load.started
        rotated.set()
        await sending
        decided = await outcomes(server)
    finally:
        stop(server)
    assert rotation.returncode == 0, err.decode()
    assert re.search(r"^re-sealed \d+ rows under data key k2; retired: (k1|none)$",
                     out.decode().splitlines()[-1]), out.decode()
    background = [line for line in log_events(tmp_path) if line["event"].startswith("data.")]
    assert [(e["event"], e["active_key"]) for e in background] == [
        ("data.reseal_started", "k1"), ("data.reseal_finished", "k1"),
        ("data.reseal_started", "k2"), ("data.reseal_finished", "k2"),
    ]
    # k1 is retired by a pass that began before it was: the first to end, or both when
    # their ends overlap (each found no process sealing under it; retiring is idempotent).
    by_cli = out.decode().endswith("retired: k1\n")
    by_gateway = background[-1]["retired"]
    assert background[1]["retired"] == [] and by_gateway in ([], ["k1"])
    assert [e["skipped"] for e in background[1::2]] == [0, 0]
    assert by_cli or by_gateway == ["k1"]

    assert load.started > during > BEFORE_ROTATION + 200
    assert len(load.answers) == load.started
    expected = [(to, "blocked" if to in load.suppressed else "allowed")
                for to, _, _ in load.answers]
    assert sorted(decided) == sorted(expected)
    assert await copy.count("decisions") == load.started
    for to, status, code in load.answers:
        assert (status, code) == ((422, 406) if to in load.suppressed else (200, 0)), to
    # Nothing under k1 either: not even the index key, which whoever holds k1 could
    # otherwise unwrap from a later copy and test guesses against the blind indexes.
    assert {table for table, ids in (await copy.sealed_key_ids()).items() if "k1" in ids} == set()

    server = start(tmp_path, store_url, encryption(True, {"k2": k2}, "k2"))
    try:
        assert sorted(await outcomes(server)) == sorted(expected)
        first = load.recipient(1)  # sent under k1 alone
        exported = await api(server, f"/v1/privacy/{quote(first)}")
        assert [d["recipient"] for d in exported["deliveries"]] == [first]
        consents = cli_json(server, "consent", "list", *numbers)
        assert [c["evidence"] for c in consents] == [load.marker] * 3  # type: ignore[index]
    finally:
        stop(server)


async def test_a_pass_run_before_every_gateway_restarted_loses_nothing(
    store_url: str, tmp_path: Path
) -> None:
    """The operator's slip: `keys rotate-data` run (from a machine configured with k2
    active) before the serving gateway was restarted with k2, which goes on sealing under
    k1. Nothing may be lost: the pass keeps k1 (the gateway's beat shows it still seals
    under it) and says so, a start without k1 is refused naming it, and with k1 every
    decision reads."""
    k1, k2 = new_key(), new_key()
    load = Load("zq" + secrets.token_hex(4), ("optout.zq@client.example.net",))
    server = start(tmp_path, store_url, encryption(True, {"k1": k1}, "k1"))
    try:
        await load.send(server, 20)
        elsewhere = tmp_path / "operator"
        elsewhere.mkdir()
        config = write_config(elsewhere, encryption(True, {"k1": k1, "k2": k2}, "k2"))
        config.write_text(config.read_text().replace('"sqlite:///var/gateway.db"',
                                                     f'"{store_url}"'))
        rotated = cli(config, "keys", "rotate-data")
        # The pass re-seals what it walks but sees the gateway still sealing under k1.
        assert rotated.returncode == 1, rotated.stderr
        assert "not retired: k1" in rotated.stderr
        assert rotated.stdout.splitlines()[-1].endswith("retired: none")
        await load.send(server, 20)
    finally:
        stop(server)

    server = launch(tmp_path, store_url, encryption(True, {"k2": k2}, "k2"))
    try:
        assert "listening" not in server.banner
        assert "encryption.keys.k1" in (tmp_path / "serve.log").read_text()
    finally:
        server.stop()
    server = start(tmp_path, store_url, encryption(True, {"k1": k1, "k2": k2}, "k2"))
    try:
        assert len(await outcomes(server)) == load.started
    finally:
        stop(server)


async def resealed(tmp_path: Path) -> dict:
    """The background pass's `data.reseal_finished` event, once the first worker logs it."""
    for _ in range(600):
        finished = [e for e in log_events(tmp_path) if e["event"] == "data.reseal_finished"]
        if finished:
            return finished[-1]
        await asyncio.sleep(0.1)
    raise AssertionError("the background pass did not finish within a minute")


async def test_an_upgrade_seals_the_database_in_place_and_every_opt_out_holds(
    store_url: str, copy: Copy, tmp_path: Path
) -> None:
    """A database the previous release wrote (no encryption) under this release's defaults:
    the first worker seals it in place while serving; then a copy shows nobody, every view
    still does, and every opt-out still holds (store-level tests cover lookups while the
    pass is half done: tests/store/test_sealing_migration.py)."""
    people = People("zq" + secrets.token_hex(4))
    server = start(tmp_path, store_url, encryption(False))
    try:
        await run_traffic(server, tmp_path, people)
    finally:
        stop(server)
    before = shown(copy.raw_bytes(), people.secrets())
    assert any(people.marker in what or "number" in what for found in before.values()
               for what in found), "written in clear, as before this release"

    server = start(tmp_path, store_url, "")  # no [encryption]: on, with a generated key
    try:
        finished = await resealed(tmp_path)
        assert finished["active_key"] == "d1" and finished["resealed"] > 0
        cli_shows_everyone(server, people)
        suppressions = (await api(server, "/v1/suppressions"))["suppressions"]
        assert folded(s["address"] for s in suppressions) == folded(
            (people.suppressed, people.unsubscriber, people.stopped))
        for address in (people.suppressed, people.unsubscriber):
            with pytest.raises(ClientError) as blocked:
                await send(server, To=address, Subject="One more?")  # type: ignore[arg-type]
            assert blocked.value.error_code == 406, address
        error = await refused(send_sms(sdk(server), to=people.stopped))  # type: ignore[arg-type]
        assert "SUPPRESSED" in str(error)
    finally:
        stop(server)
    assert (tmp_path / "var" / "data-keys.json").exists()
    leaks = shown(copy.raw_bytes(), people.secrets())
    if leaks:
        raise PlaintextInCopy(f"after the upgrade's pass: {leaks}")
