"""`GET /v1/blocks?format=csv` over real HTTP is formula-safe: blocks whose subjects (agent
text) and recipients begin like spreadsheet formulas come back, read with Python's csv
module, with one leading apostrophe, and `csv_cells.read_cell` gives the JSON's values."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from gateway.model import BlockRecord, Channel, Reason
from gateway.services.block_reports import BLOCK_CSV_COLUMNS
from gateway.services.csv_cells import TRIGGERS, read_cell
from tests.conftest import MANAGER_SECRET
from tests.web.test_admin import NOW, call, start

SUBJECTS = ['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "\t=1", "\r=1"]


def block(n: int, subject: str, channel: Channel = Channel.EMAIL,
          recipient: str = "bob@client.example.net") -> BlockRecord:
    return BlockRecord(
        time=NOW - timedelta(minutes=n),
        channel=channel,
        account="demo",
        sender="agent@example.com",
        recipient=recipient,
        reasons=(Reason("DECEPTIVE_SUBJECT", "because", "email.subject.deceptive"),),
        rules_version="v1",
        message_id=f"<m{n}@example.com>",
        subject=subject,
    )


async def test_blocks_csv_neutralises_formula_cells(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    for n, subject in enumerate([*SUBJECTS, "Plain subject"]):
        await gateway.services.store.record_block(block(n, subject))
    await gateway.services.store.record_block(
        block(len(SUBJECTS) + 1, "", Channel.SMS, recipient="+14155550100")
    )

    exported = await call(gateway, "GET", "/v1/blocks", MANAGER_SECRET,
                          params={"format": "csv"})
    as_json = await call(gateway, "GET", "/v1/blocks", MANAGER_SECRET)
    assert exported.status == 200
    assert exported.headers["Content-Type"] == "text/csv; charset=utf-8"

    reader = csv.DictReader(io.StringIO(exported.text, newline=""))
    assert tuple(reader.fieldnames or ()) == BLOCK_CSV_COLUMNS
    rows = list(reader)
    blocks = as_json.json()["blocks"]
    assert len(rows) == len(blocks) == len(SUBJECTS) + 2
    by_subject = {read_cell(row["subject"]): row["subject"] for row in rows}
    for subject in SUBJECTS:
        assert by_subject[subject] == "'" + subject
    assert by_subject["Plain subject"] == "Plain subject"
    texts = {read_cell(row["recipient"]): row["recipient"] for row in rows}
    assert texts["+14155550100"] == "'+14155550100"
    assert texts["bob@client.example.net"] == "bob@client.example.net"
    for row in rows:
        for column, cell in row.items():
            assert cell[:1] not in TRIGGERS, (column, cell)
    # The JSON is as stored; the CSV, read back, says the same.
    for row, record in zip(rows, blocks, strict=True):
        assert read_cell(row["subject"]) == (record["subject"] or "")
        assert read_cell(row["recipient"]) == record["recipient"]
