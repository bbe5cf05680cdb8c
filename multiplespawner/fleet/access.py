"""Who may list and act on which servers, from the caller's JupyterHub RBAC scopes.

=======================================  ====================================================
scope held (unfiltered unless shown)     servers the caller may list and stop
=======================================  ====================================================
``admin:servers`` (hub admins hold it)   every server
``custom:servers:manage``                every server (a fleet operator who is no hub admin)
``custom:servers:manage!group=G``        servers started from templates tagged ``G`` (the
                                         course's templates, as the template editor's
                                         ``custom:templates:edit!group=G`` means them)
anything else                            none: every request is refused with 403
=======================================  ====================================================

A server's template is the one its spawner state names; its tags are the ones the catalogue
in force gives that template now. A server whose template is no longer in the catalogue (or
that has none) is therefore a hub admin's or an unfiltered manager's only. The permission is
separate from the editor's: editing a course's templates does not let anyone stop its
students' servers unless the operator grants both (docs/fleet.md shows the roles).
"""

from __future__ import annotations

from dataclasses import dataclass

MANAGE_SCOPE = "custom:servers:manage"
_GROUP_FILTER = f"{MANAGE_SCOPE}!group="
_EVERYTHING = ("admin:servers", MANAGE_SCOPE)


@dataclass(frozen=True)
class Manager:
    """A caller allowed to manage servers: all of them, or those of templates with some tags."""

    name: str
    everything: bool
    tags: frozenset

    def may_manage(self, row: dict) -> bool:
        """May this caller see and stop the server ``row`` (see :func:`.servers.server_rows`)?"""
        return self.everything or bool(self.tags & set(row.get("tags") or ()))

    def refusal(self, template: str, tags) -> str | None:
        """Why this caller may not name ``template`` (tagged ``tags``) in a filter (None: may)."""
        if self.everything or self.tags & set(tags):
            return None
        mine = ", ".join(sorted(self.tags))
        return (f"{self.name} may manage only servers of templates tagged with their courses ({mine}); "
                f"{template!r} is not one of them")


def manager_from_scopes(name: str, scopes) -> Manager | None:
    """The :class:`Manager` a token's expanded scopes make of ``name``, or None."""
    scopes = set(scopes or ())
    if scopes & set(_EVERYTHING):
        return Manager(name, True, frozenset())
    tags = frozenset(s[len(_GROUP_FILTER):] for s in scopes if s.startswith(_GROUP_FILTER))
    return Manager(name, False, tags) if tags else None
