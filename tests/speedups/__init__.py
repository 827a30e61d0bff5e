"""Each speedup against the library it stands in for, installed explicitly whatever
GATEWAY_SPEEDUPS says; `switched` puts the libraries back as they were."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from gateway.speedups.base import Speedup


@contextlib.contextmanager
def switched(speedup: Speedup, on: bool) -> Iterator[None]:
    was_on = speedup.installed()
    speedup.install() if on else speedup.uninstall()
    try:
        yield
    finally:
        speedup.install() if was_on else speedup.uninstall()
