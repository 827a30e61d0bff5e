"""Issue 18 item 4: a first-touch "Re:" or "Fwd:" disguised with invisible or look-alike
characters is still a deceptive subject (15 U.S.C. 7704(a)(2)).

The cases come from Unicode's own data, read here by this test: every character
confusables.txt (UTS #39) gives the prototype of "R", "e", "E", ":" and the letters of "Fwd",
and every Default_Ignorable_Code_Point of DerivedCoreProperties.txt inserted at every place.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.settings import PACKAGE_RULES_DIR
from gateway.model import Facts, Purpose
from gateway.policy import decide
from gateway.rules.loader import load_rules
from tests.policy.test_email import message
from tests.test_lookalikes import CONFUSABLES, IGNORABLES

RULES = load_rules(PACKAGE_RULES_DIR)
NOW = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


def look_alikes(*letters: str) -> list[str]:
    """The letters themselves and every character confusables.txt maps to one of them."""
    wanted = {CONFUSABLES.get(letter, letter) for letter in letters}
    return sorted({*letters, *(s for s, p in CONFUSABLES.items() if p in wanted)})


R, E, COLON = look_alikes("R", "r"), look_alikes("e", "E"), look_alikes(":", "\uff1a")
F, W, D = look_alikes("F", "f"), look_alikes("w", "W"), look_alikes("d", "D")


def codes(subject: str, *, is_reply: bool = False) -> list[str]:
    decision = decide(message(subject=subject, is_reply=is_reply), Facts(), RULES, NOW)
    return [reason.code for reason in decision.all_reasons()]


def test_the_data_gives_look_alikes_of_each_letter() -> None:
    assert len(R) > 5 and len(E) > 10 and len(COLON) > 5 and len(IGNORABLES) > 4000
    assert {"\u13a1", "\u0395", "\u0435", "\ua789", "\u2236"} <= {*R, *E, *COLON}


@pytest.mark.parametrize("r", R, ids=lambda c: f"U+{ord(c):04X}")
def test_every_look_alike_of_r(r: str) -> None:
    assert codes(f"{r}e: our call") == ["DECEPTIVE_SUBJECT"]


@pytest.mark.parametrize("e", E, ids=lambda c: f"U+{ord(c):04X}")
def test_every_look_alike_of_e(e: str) -> None:
    assert codes(f"R{e}: our call") == ["DECEPTIVE_SUBJECT"]


@pytest.mark.parametrize("colon", COLON, ids=lambda c: f"U+{ord(c):04X}")
def test_every_look_alike_of_the_colon(colon: str) -> None:
    assert codes(f"Re{colon} our call") == ["DECEPTIVE_SUBJECT"]


def test_every_default_ignorable_at_every_place_of_re() -> None:
    """4,174 code points, four places each: every one is drawn as nothing."""
    missed = [
        f"U+{ord(ignorable):04X} at {place}"
        for ignorable in IGNORABLES
        for place in range(4)
        if codes("Re: x"[:place] + ignorable + "Re: x"[place:]) != ["DECEPTIVE_SUBJECT"]
    ]
    assert missed == []


@settings(max_examples=300)
@given(
    st.sampled_from(["re", "fwd"]),
    st.data(),
    st.lists(st.tuples(st.integers(0, 5), st.sampled_from(IGNORABLES)), max_size=3),
    st.sampled_from(COLON),
    st.sampled_from(["", " ", "  ", "\u00a0", "\u3000"]),
)
def test_any_disguise_of_a_first_touch_prefix_is_refused(
    prefix, data, ignorables, colon, space
) -> None:
    """Look-alikes of every letter, a look-alike colon, invisible characters anywhere."""
    letters = {"re": (R, E), "fwd": (F, W, D)}[prefix]
    shown = "".join(data.draw(st.sampled_from(options)) for options in letters) + space + colon
    for place, ignorable in sorted(ignorables, reverse=True):
        shown = shown[:place] + ignorable + shown[place:]
    subject = shown + " pricing for Q3"
    assert codes(subject) == ["DECEPTIVE_SUBJECT"], ascii(subject)
    assert codes(subject, is_reply=True) == []


ORDINARY = [
    "Résumé tips for your hiring team", "Réunion lundi à 10h", "Re-engagement offer",
    "Regarding your fleet", "Reminder: webinar tomorrow", "RE/MAX listings near you",
    "1:1 coaching for your team", "10:30 call?", "Q3: results", "Реклама: скидки недели",
    "Встреча в понедельник", "Σχετικά με την προσφορά", "Ρεπορτάζ: νέα προϊόντα",
    "会议通知", "新产品介绍", "ご案内", "신제품 안내", "Rabatt: 20 % auf alles",
    "Fwd-thinking fleets", "Award: best fleet 2026", "Svar på frågor om flottan",
    "Trésorerie : nouveautés", "Ответственность и качество",
]


@pytest.mark.parametrize("subject", ORDINARY)
def test_ordinary_subjects_in_any_language_stay_allowed(subject: str) -> None:
    assert codes(subject) == []


def test_transactional_mail_is_not_held_to_the_subject_rule() -> None:
    transactional = message(subject="R\u1d07: your order")
    transactional = replace(
        transactional, account=replace(transactional.account, purpose=Purpose.TRANSACTIONAL)
    )
    assert decide(transactional, Facts(), RULES, NOW).allowed
