"""Broken rule data at start-up and at SIGHUP: start-up refuses with one line naming the
file, the rule and the field; a running gateway keeps the rules it has."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.config.settings import PACKAGE_RULES_DIR
from tests.conftest import write_config
from tests.rules.test_calling import edit

BROKEN = [
    ("a rule without citation",
     'citation = "Conn. Gen. Stat. 42-288a (P.A. 23-98, in force 2023-10-01)"\n', "",
     "(state.CT.consent).citation is required"),
    ("an effective date that does not parse", "effective = 2023-10-01",
     'effective = "soon"', "(state.CT.consent).effective must be a date"),
    ("an unknown field", "effective = 2023-10-01", "effective = 2023-10-01\nstrict = true",
     "(state.CT.consent).strict is not a known key"),
    ("a cap without a period", 'cap = { limit = 1, period = "30d", per = "offer" }',
     "cap = { limit = 1 }", "(province.BC.frequency_cap).cap.period is required"),
]
IDS = [case[0] for case in BROKEN]


def rules_copy(tmp_path: Path) -> Path:
    directory = tmp_path / "rules"
    shutil.copytree(PACKAGE_RULES_DIR, directory)
    return directory


@pytest.mark.parametrize(("name", "old", "new", "says"), BROKEN, ids=IDS)
def test_start_up_refuses_broken_rules_in_one_line(tmp_path, name, old, new, says) -> None:
    directory = rules_copy(tmp_path)
    edit(directory, "calling.toml", old, new)
    config = write_config(tmp_path)
    config.write_text(
        config.read_text().replace("[gateway]\n", f'[gateway]\nrules_dir = "{directory}"\n', 1)
    )
    finished = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert finished.returncode != 0
    [line] = finished.stderr.strip().splitlines()
    assert str(directory / "calling.toml") in line and says in line
    assert finished.stdout == ""


@pytest.mark.parametrize(("name", "old", "new", "says"), BROKEN, ids=IDS)
async def test_a_running_gateway_keeps_its_rules_when_new_ones_are_broken(
    tmp_path, gateway_factory, name, old, new, says,
) -> None:
    directory = rules_copy(tmp_path)
    gateway = await gateway_factory()
    gateway.config = replace(gateway.config, rules_dir=directory)
    running = gateway.services.ruleset
    edit(directory, "calling.toml", old, new)
    await gateway.reload_rules()
    assert gateway.services.ruleset is running
    registry = gateway.services.metrics.registry
    labels = {"kind": "rules", "result": "failed"}
    assert registry.get_sample_value("gateway_config_reloads_total", labels) == 1
    shutil.copy(PACKAGE_RULES_DIR / "calling.toml", directory / "calling.toml")
    await gateway.reload_rules()
    assert gateway.services.ruleset is not running
    assert gateway.services.ruleset.version == running.version
