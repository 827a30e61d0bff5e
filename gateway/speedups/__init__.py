"""Faster stand-ins for library internals, installed only when asked, at start-up.

Each speedup gives the library's own results (the tests compare them), but depends on how
that library works inside, so each is installed only on the library version it was checked
against and while the code it stands in for is unchanged; otherwise it is skipped with a
warning and the library is used as it is. `[gateway] speedups = false` installs none.
"""

from __future__ import annotations

import logging

from gateway.runtime.logs import log_event
from gateway.speedups import (
    crlf_lines,
    data_section,
    dkim_rsa,
    dot_stuffing,
    header_classes,
    mime_boundaries,
)
from gateway.speedups.base import Speedup

log = logging.getLogger("gateway.speedups")

SPEEDUPS: tuple[Speedup, ...] = (
    mime_boundaries.SPEEDUP,
    header_classes.SPEEDUP,
    crlf_lines.SPEEDUP,
    data_section.SPEEDUP,
    dot_stuffing.SPEEDUP,
    dkim_rsa.SPEEDUP,
)


def install(enabled: bool) -> list[str]:
    """The names of the speedups installed; any installed before are removed first."""
    uninstall()
    if not enabled:
        log_event(log, "speedups-off")
        return []
    installed = []
    for speedup in SPEEDUPS:
        reason = speedup.skip_reason()
        if reason is None:
            speedup.install()
            installed.append(speedup.name)
            continue
        log_event(
            log, "speedup-skipped", logging.WARNING, speedup=speedup.name, reason=reason,
            versions=speedup.versions(), checked=speedup.checked_versions,
        )
    log_event(log, "speedups-installed", speedups=installed)
    return installed


def uninstall() -> None:
    """Every library as it was before any speedup was installed."""
    for speedup in SPEEDUPS:
        speedup.uninstall()
