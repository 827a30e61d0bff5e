"""Between SCIM resources and the gateway's records: a User is a person (`PersonRow`), a
Group a group (`GroupRow`). Pure: no store, no clock.

A person's userName is matched by its person key (`services.people.user_name`: the one
spelling single sign-on matches people by too; RFC 7643 gives userName caseExact=false), so
the store keeps that key and the spelling the client sent among the attributes kept for it,
with name and emails. A userName that cannot be a person key (a compatibility character
such as U+212A KELVIN SIGN or a fullwidth letter) is refused as invalidValue.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scim2_models import (
    InvalidFilterException,
    InvalidValueException,
    ScimFilter,
)
from scim2_models.path import CompareOperator, Comparison

from gateway.services.people import InvalidUserName
from gateway.services.people import user_name as user_name_key
from gateway.services.scim.models import Group, User
from gateway.store.base import GroupRow, PersonRow

# The User attributes kept as the client sent them, in PersonRow.attributes.
KEPT_AS_SENT = ("name", "emails")
USERS = "Users"
GROUPS = "Groups"


@dataclass(frozen=True)
class PersonFields:
    """What a User says of a person, in the store's terms."""

    user_name: str
    external_id: str | None
    display_name: str
    active: bool
    attributes: str


@dataclass(frozen=True)
class GroupFields:
    display_name: str
    external_id: str | None
    members: tuple[str, ...]


@dataclass(frozen=True)
class Equality:
    """A search that a filter narrows to one attribute's value (`field`: the model's
    Python name, e.g. user_name)."""

    field: str
    value: str


def _meta(resource_type: str, created: datetime, updated: datetime) -> dict[str, Any]:
    return {
        "resourceType": resource_type,
        "created": created.isoformat(),
        "lastModified": updated.isoformat(),
    }


def user_resource(person: PersonRow, groups: Sequence[GroupRow] = ()) -> User:
    """The User a person is, with the groups they are a member of."""
    kept = _attributes(person.attributes)
    spelled = kept.get("userName")
    payload: dict[str, Any] = {
        key: kept[key] for key in KEPT_AS_SENT if kept.get(key) is not None
    }
    payload.update({
        "id": person.person_id,
        "externalId": person.external_id,
        # The spelling sent, unless single sign-on has since changed the address.
        "userName": spelled if isinstance(spelled, str)
        and _key(spelled) == person.user_name else person.user_name,
        "displayName": person.display_name or None,
        "active": person.active,
        "groups": [
            {"value": group.group_id, "$ref": f"{GROUPS}/{group.group_id}",
             "display": group.display_name, "type": "direct"}
            for group in groups
        ] or None,
        "meta": _meta("User", person.created_at, person.updated_at),
    })
    return User.model_validate(payload)


def person_fields(user: User) -> PersonFields:
    """What a User (created, replaced or patched) sets on a person.

    Raises InvalidValueException for a userName that is blank, or no `active`.
    """
    spelled = (user.user_name or "").strip()
    if not spelled:
        raise InvalidValueException(detail="userName must not be empty")
    if user.active is None:
        raise InvalidValueException(detail="active is required (whether the person may sign in)")
    kept: dict[str, Any] = {"userName": spelled}
    kept.update(user.model_dump(
        scim_ctx=None, mode="json", include=set(KEPT_AS_SENT), by_alias=True, exclude_none=True
    ))
    try:
        key = user_name_key(spelled)
    except InvalidUserName as exc:
        raise InvalidValueException(detail=f"userName refused: {exc}") from None
    return PersonFields(
        user_name=key,
        external_id=user.external_id or None,
        display_name=user.display_name or "",
        active=user.active,
        attributes=json.dumps(kept, sort_keys=True, ensure_ascii=False),
    )


def _key(spelled: str) -> str | None:
    """The person key of a kept spelling; None for one no longer a key (kept before)."""
    try:
        return user_name_key(spelled)
    except InvalidUserName:
        return None


def _attributes(text: str) -> dict[str, Any]:
    """The attributes kept for a person; anything unreadable counts as none kept."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def group_resource(group: GroupRow) -> Group:
    return Group.model_validate({
        "id": group.group_id,
        "externalId": group.external_id,
        "displayName": group.display_name,
        "members": [
            {"value": person_id, "$ref": f"{USERS}/{person_id}", "type": "User"}
            for person_id in group.members
        ] or None,
        "meta": _meta("Group", group.created_at, group.updated_at),
    })


def group_fields(group: Group) -> GroupFields:
    """What a Group (created, replaced or patched) sets on a group: its members by id, each
    once. Raises InvalidValueException for a blank displayName or a member that is not a
    User or names none."""
    display_name = group.display_name or ""
    if not display_name.strip():
        raise InvalidValueException(detail="displayName must not be empty")
    members: dict[str, None] = {}
    for member in group.members or ():
        if member.type is not None and member.type.casefold() != "user":
            raise InvalidValueException(
                detail=f"members are Users; a {member.type!r} cannot be one (no nested groups)"
            )
        person_id = member.value or _last_segment(member.ref)
        if not person_id:
            raise InvalidValueException(detail="a member needs its value (the User's id)")
        members[person_id] = None
    return GroupFields(display_name, group.external_id or None, tuple(members))


def _last_segment(reference: object) -> str:
    return str(reference or "").rstrip("/").rpartition("/")[2]


def equality(search_filter: ScimFilter[Any] | None, fields: Iterable[str]) -> Equality | None:
    """The attribute and value a search filter asks for: `attribute eq "value"` on one of
    `fields` (Python names, e.g. user_name); None without a filter. Any other filter raises
    InvalidFilterException: the store looks these up by index and filters nothing else."""
    if search_filter is None:
        return None
    allowed = tuple(fields)
    node = search_filter.ast
    if isinstance(node, Comparison) and node.op == CompareOperator.eq and isinstance(
        node.value, str
    ):
        binding = search_filter.resolve_comparison(node.attr_path, strict=False)
        if binding is not None and binding.sub_field_name is None and (
            binding.field_name in allowed
        ):
            return Equality(binding.field_name, node.value)
    names = " or ".join(f'{_scim_name(field)} eq "…"' for field in allowed)
    raise InvalidFilterException(detail=f"this server filters by {names} only")


def _scim_name(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(part.capitalize() for part in rest)
