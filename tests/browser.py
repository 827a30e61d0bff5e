"""Debian's Chromium, driven by Playwright, launched the same way by every browser test."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


def browser_missing() -> str:
    """Why no browser test can run here ("" when one can)."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright)"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return ""


def launch_options() -> dict[str, Any]:
    """Keyword arguments for `playwright.chromium.launch` (sync or async API)."""
    return {"executable_path": str(CHROMIUM), "args": list(CHROMIUM_ARGS)}
