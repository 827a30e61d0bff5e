"""Vulnerability audit of the dependencies, run by `make test` on every build.

pip-audit checks the installed environment (what the tests run) and deploy/requirements.lock
(what the image ships) against the advisory data it can reach. The policy:

- a finding that has a fixed version and is not in the ignore file fails the build (exit 1):
  someone can act on it now, by raising the pin or writing down why not;
- a finding with no fixed version, or one in the ignore file, is printed loudly every build
  but does not fail it: nobody can upgrade out of it, and a red build would not be about the
  change being built;
- when the advisory service cannot be reached (no network, or it answered for no
  dependency at all), a `*** ... vulnerability audit SKIPPED ***` line says so and the build
  goes on: an audit that did not happen must never read as a clean one;
- anything else (pip-audit missing or failing in another way, a malformed ignore file) fails
  the build (exit 2): the audit is broken, and fixing it is in the change's hands.

The ignore file (deploy/pip-audit-ignore.txt) holds one `ID DATE REASON` a line: the
advisory id (or any of its aliases), the ISO date the decision was taken, and why.
An entry older than REVIEW_AFTER_DAYS is flagged for review on every build.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
IGNORE_FILE = ROOT / "deploy" / "pip-audit-ignore.txt"
LOCK_FILE = ROOT / "deploy" / "requirements.lock"
REVIEW_AFTER_DAYS = 90
SERVICE = "PyPI's vulnerability service (pypi.org)"
NOT_FOUND = "Dependency not found on PyPI"
# What requests/urllib3 say when the service is not there (no route, no DNS, a proxy
# refusing, a timeout), as opposed to pip-audit failing for a reason of its own.
UNREACHABLE = re.compile(
    r"ConnectionError|ProxyError|ConnectTimeout|ReadTimeout|Max retries exceeded"
    r"|NameResolutionError|Temporary failure in name resolution|Network is unreachable"
    r"|ServiceError|Connection refused"
)


class AuditError(Exception):
    """The audit itself is broken (not a finding, not an unreachable service)."""


@dataclass(frozen=True)
class Ignore:
    vulnerability: str
    decided: dt.date
    reason: str


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    vulnerability: str
    aliases: frozenset[str]
    fix_versions: tuple[str, ...]
    description: str

    @property
    def ids(self) -> frozenset[str]:
        return self.aliases | {self.vulnerability}


@dataclass
class Verdict:
    failing: list[Finding] = field(default_factory=list)
    unfixable: list[Finding] = field(default_factory=list)
    ignored: list[tuple[Finding, Ignore]] = field(default_factory=list)
    not_audited: list[str] = field(default_factory=list)
    reached: bool = True


def read_ignores(path: Path) -> list[Ignore]:
    """`ID DATE REASON` lines; `#` starts a comment. A bad line names its number."""
    if not path.is_file():
        return []
    ignores = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split(maxsplit=2)
        if len(parts) < 3:
            raise AuditError(f"{path.name}:{number}: expected `ID YYYY-MM-DD reason`")
        vulnerability, date, reason = parts
        try:
            decided = dt.date.fromisoformat(date)
        except ValueError:
            raise AuditError(f"{path.name}:{number}: {date!r} is not a YYYY-MM-DD date") from None
        ignores.append(Ignore(vulnerability, decided, reason))
    return ignores


def judge(report: dict[str, Any], ignores: Iterable[Ignore]) -> Verdict:
    """Sort pip-audit's JSON report (`-f json`) by the policy in the module docstring."""
    by_id = {ignore.vulnerability: ignore for ignore in ignores}
    verdict = Verdict()
    dependencies = report.get("dependencies", [])
    audited = 0
    for dependency in dependencies:
        skip = dependency.get("skip_reason")
        if skip is not None:
            if skip.startswith(NOT_FOUND):
                verdict.not_audited.append(f"{dependency['name']}")
            continue
        audited += 1
        for vuln in dependency.get("vulns", []):
            finding = Finding(
                package=dependency["name"],
                version=dependency["version"],
                vulnerability=vuln["id"],
                aliases=frozenset(vuln.get("aliases", [])),
                fix_versions=tuple(vuln.get("fix_versions", [])),
                description=vuln.get("description", ""),
            )
            ignore = next((by_id[i] for i in sorted(finding.ids) if i in by_id), None)
            if ignore is not None:
                verdict.ignored.append((finding, ignore))
            elif finding.fix_versions:
                verdict.failing.append(finding)
            else:
                verdict.unfixable.append(finding)
    verdict.reached = audited > 0 or not verdict.not_audited
    return verdict


def run_pip_audit(pip_audit: Sequence[str], args: Sequence[str]) -> dict[str, Any] | None:
    """pip-audit's JSON report, or None when the advisory service could not be reached."""
    command = [
        *pip_audit,
        "-f",
        "json",
        "--desc",
        "on",
        "--aliases",
        "on",
        "--progress-spinner",
        "off",
        *args,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    except FileNotFoundError:
        raise AuditError(f"{command[0]} not found: `make test` installs pip-audit") from None
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        report = None
    if isinstance(report, dict) and "dependencies" in report:
        return report
    if UNREACHABLE.search(result.stderr):
        return None
    tail = "\n".join(result.stderr.strip().splitlines()[-5:])
    raise AuditError(f"pip-audit failed (exit {result.returncode}): {tail}")


def describe(finding: Finding) -> str:
    fixed = ", ".join(finding.fix_versions) or "no fixed version"
    aliases = ", ".join(sorted(finding.aliases))
    return (
        f"{finding.package} {finding.version}: {finding.vulnerability}"
        f"{f' ({aliases})' if aliases else ''}; fixed in: {fixed}"
    )


def report_verdict(target: str, verdict: Verdict, today: dt.date) -> bool:
    """Print what was found in `target`; True when it fails the build."""
    if not verdict.reached:
        print(
            f"*** pip-audit could not reach {SERVICE} for {target}: it answered for none of "
            f"{len(verdict.not_audited)} dependencies: vulnerability audit SKIPPED ***"
        )
        return False
    if verdict.not_audited:
        print(
            f"*** {target}: not audited (unknown to the advisory service): "
            f"{', '.join(verdict.not_audited)} ***"
        )
    for finding in verdict.failing:
        print(f"*** VULNERABLE ({target}), fix available: {describe(finding)} ***")
    for finding in verdict.unfixable:
        print(f"*** VULNERABLE ({target}), nothing to upgrade to yet: {describe(finding)} ***")
    for finding, ignore in verdict.ignored:
        age = (today - ignore.decided).days
        print(
            f"*** VULNERABLE ({target}), ignored since {ignore.decided}: {describe(finding)}"
            f" -- {ignore.reason} ***"
        )
        if age > REVIEW_AFTER_DAYS:
            print(f"*** ignore entry {ignore.vulnerability} is {age} days old: review it ***")
    if not (verdict.failing or verdict.unfixable or verdict.ignored):
        print(f"pip-audit: {target}: no known vulnerabilities")
    return bool(verdict.failing)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pip-audit", default=str(Path(sys.executable).parent / "pip-audit"))
    parser.add_argument("--ignore-file", type=Path, default=IGNORE_FILE)
    parser.add_argument("--lock", type=Path, default=LOCK_FILE)
    parser.add_argument("--cache-dir", help="pip-audit's HTTP cache (default: pip's)")
    args = parser.parse_args(argv)
    cache = ["--cache-dir", args.cache_dir] if args.cache_dir else []
    targets = {"the installed environment": ["--skip-editable", *cache]}
    if args.lock.is_file():
        targets[args.lock.name] = ["-r", str(args.lock), "--disable-pip", "--no-deps", *cache]
    failed = False
    try:
        ignores = read_ignores(args.ignore_file)
        for target, target_args in targets.items():
            report = run_pip_audit([args.pip_audit], target_args)
            if report is None:
                print(
                    f"*** pip-audit could not reach {SERVICE} for {target}: "
                    "vulnerability audit SKIPPED ***"
                )
                continue
            failed |= report_verdict(target, judge(report, ignores), dt.date.today())
    except AuditError as error:
        print(f"*** dependency audit broken: {error} ***", file=sys.stderr)
        return 2
    if failed:
        print(
            "*** a vulnerability with a fixed version is not dealt with: raise the pin "
            f"(constraints.txt, then `make lock`) or add it to {args.ignore_file.name} "
            "with the date and the reason ***"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
