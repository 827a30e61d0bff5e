"""SCIM provisioning on the gateway's store: scim2-server's protocol handling (validation,
PUT and PATCH semantics, attribute selection, paging, errors) over `ScimDirectory`, which
keeps Users as people and Groups as groups.

What provisioning does to access: a person's role is the highest their groups map to
(`[scim] roles`), recomputed for every member a group change touches (a changed role ends
their sessions); deactivating a person (active=false, by PUT or PATCH) or deleting them
ends their sessions at once. Every change is audited (actor "scim") with ids only.

Concurrent requests: a PUT or PATCH is applied to the resource as it was read at the
request's start, so what it writes is what the client changed relative to that, column by
column (`PersonChanges`; a person's `active` only through `People.set_active`): a PATCH of
the displayName racing a deactivation (or a sign-in, or a group change) leaves the others'
columns as they wrote them. The operations of one process also run one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import replace
from typing import Any, TypeVar

from scim2_models import (
    InvalidValueException,
    NotFoundException,
    NotImplementedException,
    Resource,
    ResourceType,
    ResponseParameters,
    SearchRequest,
    UniquenessException,
)
from scim2_server.handler import AsyncScimHandler
from scim2_server.service import ScimService
from scim2_server.storage import AsyncScimStorage, SearchPage

from gateway.model import AuditEvent, Role
from gateway.runtime.clock import Clock
from gateway.services.people import InvalidUserName, People, user_name
from gateway.services.scim.mapping import (
    equality,
    group_fields,
    group_resource,
    person_fields,
    user_resource,
)
from gateway.services.scim.models import MAX_RESULTS, Group, User, scim_provider
from gateway.store.base import (
    KEEP,
    MAX_PAGE_START,
    Conflict,
    GroupRow,
    PersonChanges,
    PersonRow,
    Store,
)

ACTOR = "scim"
# The store's name of a unique field -> the SCIM attribute (Conflict names the field).
SCIM_NAMES = {"user_name": "userName", "external_id": "externalId", "display_name": "displayName"}
# What this request's operation read, by (resource type, id): what a PUT or PATCH changes is
# the difference between the resource it sends and this.
_READ: ContextVar[dict[tuple[str, str], PersonRow | GroupRow] | None] = ContextVar(
    "scim_read", default=None
)
_T = TypeVar("_T")


def _new_id() -> str:
    return secrets.token_hex(16)


class ScimDirectory(AsyncScimStorage):
    """Users and Groups in the store. Searches narrow by `userName eq` / `externalId eq`
    (Users) or `displayName eq` (Groups), which the store finds by index; other filters
    are refused (`mapping.equality`)."""

    def __init__(
        self, store: Store, people: People, clock: Clock, roles: Callable[[], Mapping[str, Role]]
    ) -> None:
        self.store = store
        self.people = people
        self.clock = clock
        self.roles = roles
        self._one_at_a_time = asyncio.Lock()

    def operation(self) -> AbstractAsyncContextManager[None]:
        """One SCIM operation: alone in this process, remembering what it reads."""
        return self._operation()

    @contextlib.asynccontextmanager
    async def _operation(self) -> AsyncIterator[None]:
        async with self._one_at_a_time:
            token = _READ.set({})
            try:
                yield
            finally:
                _READ.reset(token)

    @staticmethod
    def _remember(kind: str, row: PersonRow | GroupRow, key: str) -> None:
        read = _READ.get()
        if read is not None:
            read[(kind, key)] = row

    @staticmethod
    def _read_before(kind: str, key: str) -> PersonRow | GroupRow | None:
        read = _READ.get()
        return None if read is None else read.get((kind, key))

    # -- reads ------------------------------------------------------------------------

    async def get(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        response_parameters: ResponseParameters[Any] | None = None,
    ) -> Resource[Any]:
        if resource_type.name == "User":
            person = await self.store.person(resource_id)
            if person is None:
                raise NotFoundException(detail=f"no User {resource_id!r}")
            self._remember("User", person, resource_id)
            return await self._user(person)
        group = await self.store.group(resource_id)
        if group is None:
            raise NotFoundException(detail=f"no Group {resource_id!r}")
        self._remember("Group", group, resource_id)
        return group_resource(group)

    async def search(
        self,
        resource_types: list[ResourceType],
        search_request: SearchRequest[Any],
        *,
        position: Any = None,
    ) -> SearchPage:
        # Any startIndex and count a client sends, within what SQL can take.
        start = min(max(search_request.start_index_0 or 0, 0), MAX_PAGE_START)
        count = min(max(search_request.count if search_request.count is not None
                        else MAX_RESULTS, 0), MAX_RESULTS)
        if len(resource_types) > 1:
            return await self._search_everything(search_request, start, count)
        if resource_types[0].name == "User":
            return await self._search_users(search_request, start, count)
        return await self._search_groups(search_request, start, count)

    async def _search_everything(
        self, search_request: SearchRequest[Any], start: int, count: int
    ) -> SearchPage:
        """A search at the root: the Users, then the Groups, paged as one list."""
        if search_request.filter is not None:
            raise NotImplementedException(detail="filter at /Users or /Groups, not the root")
        _, users = await self.store.people(0, 0)
        people, _ = await self.store.people(start, count) if start < users else ([], users)
        rest = count - len(people)
        groups, total = await self.store.groups(max(start - users, 0), rest)
        return SearchPage(
            users + total,
            [*[await self._user(person) for person in people],
             *[group_resource(group) for group in groups]],
        )

    async def _search_users(
        self, search_request: SearchRequest[Any], start: int, count: int
    ) -> SearchPage:
        wanted = equality(search_request.filter, ("user_name", "external_id"))
        if wanted is not None and wanted.field == "external_id":
            found = await self.store.person_by_external_id(wanted.value)
            people = [found] if found is not None else []
            page, total = people[start:start + count], len(people)
        elif wanted is not None:
            try:
                key = user_name(wanted.value)
            except InvalidUserName:
                return SearchPage(0, [])  # no person can have it
            page, total = await self.store.people(start, count, key)
        else:
            page, total = await self.store.people(start, count)
        return SearchPage(total, [await self._user(person) for person in page])

    async def _search_groups(
        self, search_request: SearchRequest[Any], start: int, count: int
    ) -> SearchPage:
        wanted = equality(search_request.filter, ("display_name",))
        page, total = await self.store.groups(
            start, count, wanted.value if wanted is not None else None
        )
        return SearchPage(total, [group_resource(group) for group in page])

    async def _user(self, person: PersonRow) -> User:
        return user_resource(person, await self.store.groups_of_person(person.person_id))

    # -- writes -----------------------------------------------------------------------

    async def create(self, resource_type: ResourceType, resource: Resource[Any]) -> Resource[Any]:
        now = self.clock.now()
        if isinstance(resource, User):
            fields = person_fields(resource)
            person = PersonRow(
                person_id=_new_id(), user_name=fields.user_name, created_at=now, updated_at=now,
                external_id=fields.external_id, display_name=fields.display_name,
                active=fields.active, attributes=fields.attributes,
            )
            await _unique(self.store.save_person(person))
            await self._audit("scim.user.created", person_id=person.person_id)
            return user_resource(person)
        assert isinstance(resource, Group)
        fields = group_fields(resource)
        group = GroupRow(
            group_id=_new_id(), display_name=fields.display_name, created_at=now,
            updated_at=now, external_id=fields.external_id,
            members=await self._people(fields.members),
        )
        await _unique(self.store.save_group(group))
        await self._audit("scim.group.created", group_id=group.group_id,
                          members=len(group.members))
        await self._recompute_roles(group.members)
        return await self.get(resource_type, group.group_id)

    async def update(
        self,
        resource_type: ResourceType,
        resource: Resource[Any],
        *,
        expected_version: str | None = None,
    ) -> Resource[Any]:
        resource_id = str(resource.id)
        if isinstance(resource, User):
            await self._update_person(resource_id, resource)
        else:
            assert isinstance(resource, Group)
            await self._update_group(resource_id, resource)
        return await self.get(resource_type, resource_id)

    async def _update_person(self, person_id: str, user: User) -> None:
        """Writes what the client changed in the User it read (each column on its own)."""
        read = self._read_before("User", person_id)
        seen = read if isinstance(read, PersonRow) else await self.store.person(person_id)
        if seen is None:
            raise NotFoundException(detail=f"no User {person_id!r}")
        fields = person_fields(user)

        def sent(name: str, value: Any) -> Any:
            return KEEP if value == getattr(seen, name) else value

        changes = PersonChanges(
            user_name=sent("user_name", fields.user_name),
            external_id=sent("external_id", fields.external_id),
            display_name=sent("display_name", fields.display_name),
            attributes=sent("attributes", fields.attributes),
        )
        changed = await _unique(self.store.update_person(person_id, changes, self.clock.now()))
        if changed is None:
            raise NotFoundException(detail=f"no User {person_id!r}")
        if changed[0] != changed[1]:
            await self._audit("scim.user.updated", person_id=person_id)
        if fields.active != seen.active:
            # Deactivation goes through People, which ends the person's sessions at once.
            if await self.people.set_active(person_id, fields.active) is None:
                raise NotFoundException(detail=f"no User {person_id!r}")
            action = "scim.user.reactivated" if fields.active else "scim.user.deactivated"
            await self._audit(action, person_id=person_id)

    async def _update_group(self, group_id: str, group: Group) -> None:
        """Applies what the client changed in the Group it read (members added and removed,
        a new name or externalId) to the group as it is stored now."""
        before = await self.store.group(group_id)
        if before is None:
            raise NotFoundException(detail=f"no Group {group_id!r}")
        read = self._read_before("Group", group_id)
        seen = read if isinstance(read, GroupRow) else before
        fields = group_fields(group)
        sent = set(await self._people(fields.members, seen.members))
        members = (set(before.members) - (set(seen.members) - sent)) | (sent - set(seen.members))
        after = replace(
            before,
            display_name=fields.display_name if fields.display_name != seen.display_name
            else before.display_name,
            external_id=fields.external_id if fields.external_id != seen.external_id
            else before.external_id,
            members=tuple(sorted(members)),
        )
        if after == before:
            return
        await _unique(self.store.save_group(replace(after, updated_at=self.clock.now())))
        old, new = set(before.members), set(after.members)
        await self._audit("scim.group.updated", group_id=group_id, added=len(new - old),
                          removed=len(old - new))
        renamed = before.display_name != after.display_name
        await self._recompute_roles(old | new if renamed else old ^ new)

    async def delete(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        expected_version: str | None = None,
    ) -> None:
        if resource_type.name == "User":
            # The store ends the person's sessions and drops their memberships with them.
            if not await self.store.delete_person(resource_id):
                raise NotFoundException(detail=f"no User {resource_id!r}")
            await self._audit("scim.user.deleted", person_id=resource_id)
            return
        before = await self.store.group(resource_id)
        if before is None or not await self.store.delete_group(resource_id):
            raise NotFoundException(detail=f"no Group {resource_id!r}")
        await self._audit("scim.group.deleted", group_id=resource_id,
                          members=len(before.members))
        await self._recompute_roles(before.members)

    # -- membership and roles ---------------------------------------------------------

    async def _people(
        self, person_ids: tuple[str, ...], known: Iterable[str] = ()
    ) -> tuple[str, ...]:
        """The ids, each naming a person; one that names none is the client's error. The
        `known` members are not looked up again (the store keeps only people anyway)."""
        for person_id in set(person_ids).difference(known):
            if await self.store.person(person_id) is None:
                raise InvalidValueException(detail=f"member {person_id!r} is no User")
        return person_ids

    async def _recompute_roles(self, person_ids: Iterable[str]) -> None:
        """Each person's groups and role as their memberships now stand."""
        roles = self.roles()
        for person_id in sorted(set(person_ids)):
            groups = [group.display_name for group in await self.store.groups_of_person(person_id)]
            changed = await self.people.set_groups(person_id, groups, roles)
            if changed is None:
                continue
            after, before = changed
            if after.role != before.role:
                await self._audit("scim.user.role_changed", person_id=person_id,
                                  role_from=before.role, role_to=after.role)

    async def _audit(self, action: str, **details: object) -> None:
        await self.store.append_audit(
            AuditEvent(time=self.clock.now(), actor=ACTOR, action=action, details=details)
        )


async def _unique(write: Awaitable[_T]) -> _T:
    """A write that would give two resources one unique value answers 409 uniqueness."""
    try:
        return await write
    except Conflict as exc:
        field = SCIM_NAMES.get(str(exc), "userName or externalId")
        raise UniquenessException(detail=f"another resource has this {field}") from exc


def scim_handler(directory: ScimDirectory) -> AsyncScimHandler:
    """The SCIM protocol over `directory`: what the web layer hands each request to."""
    return AsyncScimHandler(ScimService(scim_provider()), directory)
