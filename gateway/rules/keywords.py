"""Inbound SMS keywords: what a reply asks for (opt out, opt back in, help)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

InboundKind = Literal["opt_out", "opt_in", "help"]


@dataclass(frozen=True)
class Keywords:
    """Normalised (see `normalize_reply`) inbound SMS keywords and the revocation pattern."""

    opt_out: frozenset[str]
    opt_in: frozenset[str]
    help: frozenset[str]
    revocation: re.Pattern[str]



def normalize_reply(text: str) -> str:
    """Case-folded words joined by single spaces; apostrophes dropped ("don't" = "dont"),
    every other run of punctuation or white space is a word break."""
    return " ".join(_WORD.findall(text.casefold().translate(_APOSTROPHES)))


def classify_inbound_text(body: str, keywords: Keywords) -> InboundKind | None:
    """What an inbound text asks for. An opt-out keyword as the whole reply, or an FCC
    revocation phrase anywhere in it as whole words, is an opt-out, and wins over any opt-in
    word; opt-in and help need the keyword alone (re-subscribing on a chatty reply that
    merely contains "yes" would be the costly mistake)."""
    text = normalize_reply(body)
    if text in keywords.opt_out or keywords.revocation.search(text):
        return "opt_out"
    if text in keywords.opt_in:
        return "opt_in"
    if text in keywords.help:
        return "help"
    return None



_APOSTROPHES = str.maketrans("", "", "'\u2018\u2019`\u00b4")
_WORD = re.compile(r"[^\W_]+")
