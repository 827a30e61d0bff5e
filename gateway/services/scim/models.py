"""What the gateway's SCIM service publishes (RFC 7643): the User and Group resources as
far as the gateway keeps them, and the ServiceProviderConfig.

A SCIM client (and scim2-tester) writes every attribute a published schema lets it write
and expects it back, so the schemas name only what is kept: a User's userName, name,
displayName, active (required: a client says whether the person may sign in), emails and
externalId, its groups read-only (membership is set on the Group); a Group's displayName
(unique, without regard to case), externalId and members, which are Users (no nested
groups). Bulk, sorting, ETags and password changes are not offered.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field
from scim2_models import (
    URN,
    AuthenticationScheme,
    Bulk,
    CaseExact,
    ChangePassword,
    ComplexAttribute,
    Email,
    ETag,
    Filter,
    GroupMembership,
    Mutability,
    Name,
    Patch,
    Reference,
    Required,
    Resource,
    ScimPolicy,
    ScimProvider,
    ServiceProviderConfig,
    Sort,
    Uniqueness,
)

# The most resources one page of a search answers (also when `count` asks for more).
MAX_RESULTS = 200


class User(Resource[Any]):
    """A person who signs in to the gateway."""

    __schema__ = URN("urn:ietf:params:scim:schemas:core:2.0:User")

    user_name: Annotated[str | None, Required.true, Uniqueness.server] = None
    """The person's email address, which matches them at single sign-on (without case)."""

    name: Name | None = None
    """The components of the person's name."""

    display_name: str | None = None
    """The name the gateway shows for the person."""

    active: Annotated[bool | None, Required.true] = None
    """Whether the person may sign in; false ends their sessions at once. Required: the
    gateway never guesses whether someone may sign in."""

    emails: list[Email] | None = None
    """The person's email addresses."""

    groups: Annotated[list[GroupMembership] | None, Mutability.read_only] = None
    """The groups the person is a member of (set through the Group's members)."""


class GroupMember(ComplexAttribute):
    value: Annotated[str | None, Mutability.immutable, CaseExact.true] = None
    """The member's id: a User."""

    ref: Annotated[Reference[User] | None, Mutability.immutable] = Field(
        None, serialization_alias="$ref", validation_alias="$ref"
    )
    """The member's URI."""

    type: Annotated[str | None, Mutability.immutable] = Field(None, examples=["User"])
    """The member's resource type: User."""


class Group(Resource[Any]):
    """A group of people; its display name maps to a role ([scim] roles)."""

    __schema__ = URN("urn:ietf:params:scim:schemas:core:2.0:Group")

    display_name: Annotated[str | None, Required.true, Uniqueness.server] = None
    """The group's name, unique without regard to case."""

    members: list[GroupMember] | None = None
    """The people in the group."""


CONFIG = ServiceProviderConfig(
    patch=Patch(supported=True),
    bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
    filter=Filter(supported=True, max_results=MAX_RESULTS),
    change_password=ChangePassword(supported=False),
    sort=Sort(supported=False),
    etag=ETag(supported=False),
    authentication_schemes=[
        AuthenticationScheme(
            type=AuthenticationScheme.Type.oauthbearertoken,
            name="Bearer token",
            description="Authorization: Bearer <the gateway's [scim] token>",
            primary=True,
        )
    ],
)


# What identity providers send beyond the specification is taken as they mean it: an
# attribute the schemas do not name (Entra ID's enterprise extension, a title, a member's
# display) is dropped, not refused; Entra ID's PATCH remove with a value selects what to
# remove, and its replace on a filter that matches nothing adds the entry.
TOLERANCE = ScimPolicy(
    unknown=ScimPolicy.Unknown.ignore,
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
)


def scim_provider() -> ScimProvider:
    return ScimProvider(models=[User, Group], config=CONFIG, policy=TOLERANCE)
