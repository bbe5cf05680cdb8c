"""Who may change which template, from JupyterHub RBAC scopes.

``custom:templates:edit`` lets its holder change every template.
``custom:templates:edit!group=G`` lets its holder change the templates tagged ``G``
(``tags: [G]`` in the template) and nothing else: a new template must carry one of the
holder's tags, and an edit may not move a template out of the holder's tags.
"""

from __future__ import annotations

from dataclasses import dataclass

EDIT_SCOPE = "custom:templates:edit"
_GROUP_FILTER = f"{EDIT_SCOPE}!group="


@dataclass(frozen=True)
class Editor:
    """A person allowed to edit templates: everything, or templates with some tags."""

    name: str
    everything: bool
    tags: frozenset

    def may_edit(self, spec: dict | None) -> bool:
        """May this editor change (or delete) the template ``spec`` as it is now?"""
        if self.everything:
            return True
        return spec is not None and bool(self.tags & set(spec.get("tags") or []))

    def refusal(self, before: dict | None, after: dict | None) -> str | None:
        """Why this editor may not turn ``before`` into ``after`` (None: allowed).

        ``before`` None is a creation, ``after`` None a deletion.
        """
        if self.everything:
            return None
        mine = ", ".join(sorted(self.tags))
        if before is not None and not self.may_edit(before):
            return f"you may only edit templates tagged with one of your courses ({mine})"
        if after is not None and not self.may_edit(after):
            return f"the template must keep a tag of one of your courses ({mine}) in 'tags'"
        return None


def editor_from_scopes(name: str, scopes) -> Editor | None:
    """The :class:`Editor` a token's expanded scopes make of ``name``, or None."""
    scopes = set(scopes or ())
    if EDIT_SCOPE in scopes:
        return Editor(name, True, frozenset())
    tags = frozenset(s[len(_GROUP_FILTER):] for s in scopes if s.startswith(_GROUP_FILTER))
    return Editor(name, False, tags) if tags else None
