"""What the console's tests share beyond the store (conftest.py): a person signed in
through the configured provider, and the CSRF token a page's forms carry."""

from __future__ import annotations

import re

from gateway.auth.sessions import Sessions
from gateway.model import Role
from gateway.services.people import Identity, People

ROLES = {"admins": Role.ADMIN, "managers": Role.MANAGER, "reps": Role.REP}
"""The provider's groups and the console roles they map to."""


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert match, "the page has a form with its session's CSRF token"
    return match.group(1)


async def person_session(people: People, sessions: Sessions, email: str, group: str) -> str:
    """A session cookie for the person `email`, signed in through the provider in `group`."""
    person, _ = await people.signed_in(
        Identity(email, f"okta|{email}", email.split("@")[0].title(), (group,)), ROLES)
    return await sessions.open(role=ROLES[group].name.lower(), method="oidc:okta",
                               person_id=person.person_id)
