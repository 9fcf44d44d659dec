"""Who may do what in the state portal, and which rows each principal may see: the one table.

Everything that asks "may this role do that?" reads this module and nothing else:

* the route dependencies: ``Annotated[Principal, deps.permitted(action)]`` (:mod:`portal.deps`)
  answers 403 to every role the action does not list;
* the navigation menu (:data:`portal.web.render.NAV`) shows an entry to the roles of its action;
* the database: the ``users.role`` CHECK constraint lists :data:`ROLES` (:mod:`portal.models`);
* the tests: ``tests/test_portal_permissions.py`` walks every route of the real app with every
  role and expects exactly what this table says.

The roles (SPEC §5): ``officer`` and ``court`` verify one vehicle at a time, ``dmv`` also in
batches, ``insurer`` liaisons see their own NAIC's book of business and service health,
``admin`` does everything.

Which rows: everyone reads the queries they asked themselves, administrators everyone's
(:func:`may_read_query`, :func:`sees_every_row`); an insurer liaison sees the rows of their own
NAIC only (:func:`visible_naics`).

Adding an action (a new package, e.g. enforcement letters)::

    from portal.permissions import Role, register

    SEND_LETTERS = register("send_letters", Role.DMV, Role.ADMIN)

at import time of the package's own permissions (or routes) module, then guard its routes with
``Annotated[Principal, permitted(SEND_LETTERS)]`` and, for a page, add a
``NavItem(href, label, SEND_LETTERS)`` to the menu. A name registered twice is refused, so two
packages cannot silently disagree about one action. The route walk test picks up the new routes
by itself; a route without any action must be listed among the public ones there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol


class Role(StrEnum):
    OFFICER = "officer"
    COURT = "court"
    DMV = "dmv"
    INSURER = "insurer"
    ADMIN = "admin"


ROLES: tuple[str, ...] = tuple(role.value for role in Role)


@dataclass(frozen=True)
class Action:
    """Something a principal may be allowed to do, and the roles that may."""

    name: str
    roles: frozenset[Role]

    def allows(self, role: str) -> bool:
        return role in self.roles


_TABLE: dict[str, Action] = {}


def register(name: str, *roles: Role) -> Action:
    """Add an action to the table; a name already taken or an empty role list is refused."""
    if name in _TABLE:
        raise ValueError(f"action {name!r} is already registered")
    if not roles:
        raise ValueError(f"action {name!r} needs at least one role")
    action = Action(name, frozenset(Role(role) for role in roles))
    _TABLE[name] = action
    return action


def table() -> Mapping[str, Action]:
    """Every registered action by name (read-only)."""
    return MappingProxyType(_TABLE)


VERIFY = register("verify", Role.OFFICER, Role.COURT, Role.DMV, Role.ADMIN)
VERIFY_BATCH = register("verify_batch", Role.DMV, Role.ADMIN)
READ_QUERIES = register("read_queries", Role.OFFICER, Role.COURT, Role.DMV, Role.ADMIN)
BOOK_OF_BUSINESS = register("book_of_business", Role.INSURER, Role.ADMIN)
COMPLIANCE = register("compliance", Role.INSURER, Role.ADMIN)
MANAGE_INSURERS = register("manage_insurers", Role.ADMIN)
MANAGE_USERS = register("manage_users", Role.ADMIN)
MANAGE_TOKENS = register("manage_tokens", Role.ADMIN)
# ID cards (SPEC §7): checking a card, and reading the registry of card issuers (a liaison
# reads the issuers tied to their own NAIC: visible_naics).
CHECK_CARDS = register("check_cards", Role.OFFICER, Role.COURT, Role.DMV, Role.ADMIN)
READ_CARD_ISSUERS = register("read_card_issuers", Role.INSURER, Role.ADMIN)


class Subject(Protocol):
    """What the row rules need of a principal (``portal.deps.Principal`` is one)."""

    @property
    def username(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def naic(self) -> str | None: ...


def sees_every_row(subject: Subject) -> bool:
    """Administrators see every query, file and insurer; everyone else a part."""
    return subject.role == Role.ADMIN


def may_read_query(subject: Subject, asked_by: str) -> bool:
    """A logged query: your own; administrators any."""
    return sees_every_row(subject) or asked_by == subject.username


def visible_naics(subject: Subject) -> frozenset[str] | None:
    """The NAICs whose rows (book-of-business files, service health) the subject may see:
    ``None`` for every NAIC (administrators), an insurer liaison's own, nobody else's."""
    if sees_every_row(subject):
        return None
    if subject.role == Role.INSURER and subject.naic:
        return frozenset({subject.naic})
    return frozenset()
