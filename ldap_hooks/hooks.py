"""The pre-spawn hooks: find or create the user's entry, then hand its values to the spawner.

``setup_ldap_entry_hook(spawner)`` runs, for one spawn:

1. read the submitted data (``submit_spawner_attribute``) and the values known without LDAP;
2. search ``base_dn`` for an entry with the configured object classes and the user's
   ``unique_object_attributes``; one found -> use it (nothing is written, no uid allocated);
3. otherwise check that the server's schema has every configured object class, run
   ``search_attribute_queries`` (the uid counter) and allocate the next value with an atomic
   delete-old/add-new modify, retried with jittered exponential backoff when another spawn
   moved the counter first; then add the entry in one operation;
4. fill ``set_spawner_attributes`` (e.g. ``environment`` NB_USER/NB_UID) on the spawner.

A counter value is given back (when nobody has moved the counter since; else it is skipped)
only when the add certainly did not happen: it was never sent, or the server refused it. If the
server answers entryAlreadyExists, the entry under that DN is read first: when it carries this
spawn's counter values, it is this spawn's own add, applied before its answer was lost and the
client sent it again, and it is used as created. Otherwise (a concurrent spawn of the same
user got there first) the value is given back and that user's entry is used. When the add's
outcome is unknown (timed out, connection lost, spawn cancelled) the value stays taken: the
server may have stored it, and giving it back would hand it to the next user as well.

Any failure raises :class:`~ldap_hooks.errors.LDAPSpawnError`: the spawn stops, the user reads
a clear message and the hub log gets the detail. The only write besides the entry itself is the
counter, so a failed spawn leaves at most an unused uidNumber behind.

Logging: INFO and above name the user, the step and the counter values, never the DN or other
values derived from the user's data (certificate subject, auth_state); those are at DEBUG.
"""

import asyncio
import inspect
import random
import re
import weakref
from dataclasses import dataclass

from ldap3 import BASE, MODIFY_ADD, MODIFY_DELETE
from traitlets import TraitError

from .client import Settings, get_client
from .config import INCREMENT_ATTRIBUTE, LDAP, LDAP_SEARCH_ATTRIBUTE_QUERY
from .entry import (
    build_dn,
    check_value,
    dynamic_values,
    fill,
    initial_sources,
    match_filter,
    parse_submitted,
    resolve_path,
)
from .errors import (
    CounterContention,
    DirectoryError,
    DirectoryResultError,
    LDAPConfigError,
    UserDataError,
    spawn_error,
)
from .metrics import measured

# add results that mean "this data is not acceptable" rather than "the setup is broken"
_REFUSED_DATA = ("invalidAttributeSyntax", "constraintViolation", "invalidDNSyntax", "namingViolation")


@dataclass
class EntryResult:
    """What the hook did: the entry's ``dn``, its ``attributes``, whether it was ``created``,
    and the dynamic ``values`` given to ``set_spawner_attributes``."""

    dn: str
    attributes: dict
    created: bool
    values: dict


class _CounterState:
    """One counter as this process sees it: a turn lock and the value it last wrote."""

    def __init__(self):
        self.lock = asyncio.Lock()
        self.last: str | None = None


_counters: dict[tuple, _CounterState] = {}


def _counter_state(settings: Settings, dn: str, name: str) -> _CounterState:
    key = (settings.url, dn.lower(), name.lower(), asyncio.get_running_loop())
    state = _counters.get(key)
    if state is None:
        state = _counters[key] = _CounterState()
    return state


class EntrySetup:
    """One run of the hook for one spawner (see the module docstring)."""

    def __init__(self, ldap: LDAP, spawner):
        self.ldap = ldap
        self.spawner = spawner
        self.log = spawner.log
        self.user = spawner.user.name
        self.client = None  # set by run(), once the options are known to be complete

    def _check_config(self) -> None:
        missing = [n for n in ("url", "base_dn") if not getattr(self.ldap, n)]
        if not self.ldap.object_classes:
            missing.append("object_classes")
        if missing:
            raise LDAPConfigError(f"LDAP.{', LDAP.'.join(missing)} must be set")

    async def run(self) -> EntryResult:
        self._check_config()
        self.client = get_client(Settings.from_config(self.ldap))
        submitted = await self._submitted()
        sources = initial_sources(submitted, self.spawner)
        known = dynamic_values(self.ldap.dynamic_attributes, sources, self.ldap.max_value_length)
        identity = self._identity(submitted, known)
        result = await self._find(identity, sources)
        if result is None:
            result = await self._create(submitted, sources, known, identity)
        self._apply_to_spawner(result.values)
        return result

    # ---- inputs --------------------------------------------------------------------------------
    async def _submitted(self):
        path = self.ldap.submit_spawner_attribute
        if not path:
            return {}
        if path == "auth_state" or path.startswith("auth_state."):
            auth_state = await self.spawner.user.get_auth_state()
            value = resolve_path({"auth_state": auth_state}, path)
        else:
            value = resolve_path(self.spawner, path)
        for key in self.ldap.submit_spawner_attribute_keys:
            value = value.get(key) if isinstance(value, dict) else None
        return parse_submitted(
            value,
            replace=self.ldap.replace_object_with,
            strip_chars=self.ldap.name_strip_chars,
            allowed_names=self.ldap.submit_attribute_names,
            max_length=self.ldap.max_value_length,
        )

    def _identity(self, submitted, known) -> dict:
        """The attribute values that identify this user's entry."""
        names = self.ldap.unique_object_attributes or list(submitted)
        if not names:
            raise LDAPConfigError(
                "nothing identifies a user's entry: set LDAP.unique_object_attributes"
                " or LDAP.submit_spawner_attribute"
            )
        identity = {}
        for name in names:
            if name in known:
                value = known[name]
            elif name in submitted:
                value = submitted[name]
            elif name in self.ldap.object_attributes:
                value = fill(self.ldap.object_attributes[name], known)
            else:
                raise LDAPConfigError(
                    f"unique attribute {name} has no value before the entry exists"
                    " (define it in LDAP.dynamic_attributes from the user or submitted data)"
                )
            identity[name] = check_value(name, value, self.ldap.max_value_length)
        return identity

    # ---- find ----------------------------------------------------------------------------------
    async def _find(self, identity: dict, sources: dict) -> EntryResult | None:
        search_filter = match_filter(self.ldap.object_classes, identity)
        entries = await self.client.search(self.ldap.base_dn, search_filter, size_limit=2)
        if not entries:
            return None
        if len(entries) > 1:
            self.log.debug("LDAP: entries matching %s: %s", search_filter, [e.dn for e in entries])
            raise DirectoryResultError(
                "ambiguous",
                f"several entries under LDAP.base_dn have the object classes and the values of"
                f" {', '.join(identity)} of this user (LDAP.unique_object_attributes); DNs at DEBUG",
            )
        entry = entries[0]
        values = self._final_values(sources, entry.attributes)
        self.log.info("LDAP: found the entry of user %s", self.user)
        self.log.debug("LDAP: entry of user %s is %s", self.user, entry.dn)
        return EntryResult(entry.dn, dict(entry.attributes), False, values)

    # ---- create --------------------------------------------------------------------------------
    async def _create(self, submitted, sources, known, identity) -> EntryResult:
        await self._check_schema()
        ldap_values, allocations = await self._run_queries()
        try:
            dn, attributes = self._new_entry(submitted, known, ldap_values)
        except BaseException:
            await self._undo(allocations)  # nothing was sent
            raise
        try:
            await self.client.add(dn, self.ldap.object_classes, attributes)
        except DirectoryResultError as e:
            return await self._add_refused(e, dn, attributes, allocations, identity, sources)
        except BaseException:
            self._keep(allocations, "the add's outcome is unknown")
            raise
        self.log.info("LDAP: created the entry of user %s%s", self.user, _allocated(allocations))
        self.log.debug("LDAP: entry of user %s is %s", self.user, dn)
        stored = {name: [str(value)] for name, value in attributes.items()}
        stored["objectClass"] = list(self.ldap.object_classes)
        values = self._final_values(sources, stored)
        return EntryResult(dn, stored, True, values)

    def _new_entry(self, submitted, known, ldap_values) -> tuple[str, dict]:
        """The DN and attributes of the new entry."""
        pre = dict(known)
        pre.update(
            dynamic_values(
                self.ldap.dynamic_attributes,
                {LDAP_SEARCH_ATTRIBUTE_QUERY: ldap_values},
                self.ldap.max_value_length,
            )
        )
        attributes = dict(submitted)
        for name, template in self.ldap.object_attributes.items():
            attributes[name] = fill(template, pre)  # operator template + checked values
        rdn_names = self.ldap.rdn_attributes or list(submitted)
        missing = [n for n in rdn_names if n not in attributes]
        if missing or not rdn_names:
            raise LDAPConfigError(
                f"the entry's name needs {missing or 'LDAP.rdn_attributes'}, which have no value"
            )
        return build_dn([(n, attributes[n]) for n in rdn_names], self.ldap.base_dn), attributes

    async def _add_refused(self, error, dn, attributes, allocations, identity, sources) -> EntryResult:
        """The server answered the add with ``error``: find out whose entry is in the way, if
        any, then give the counter values back unless that entry holds them."""
        if error.result == "entryAlreadyExists":
            try:
                existing = await self._read(dn)
            except BaseException:
                self._keep(allocations, "could not read the entry in the way")
                raise
            if existing is not None and _carries(existing.attributes, attributes, allocations):
                # our own add, applied before its answer was lost; the retry found it
                self.log.info(
                    "LDAP: created the entry of user %s%s (the directory had applied the add"
                    " before its answer was lost)", self.user, _allocated(allocations),
                )
                allocations.clear()
                values = self._final_values(sources, existing.attributes)
                return EntryResult(existing.dn, dict(existing.attributes), True, values)
            await self._undo(allocations)
            # a concurrent spawn of the same user got there first: use its entry
            found = await self._find(identity, sources)
            if found is not None:
                return found
            raise UserDataError("another account in the directory already has the same name (DN)") from error
        await self._undo(allocations)
        if error.result in _REFUSED_DATA:
            raise UserDataError(
                f"the directory does not accept these account details ({error.result})"
            ) from error
        raise error

    async def _read(self, dn: str):
        """The entry ``dn`` with all its attributes, or None if there is none."""
        try:
            entries = await self.client.search(dn, "(objectClass=*)", scope=BASE)
        except DirectoryResultError as e:
            if e.result == "noSuchObject":
                return None
            raise
        return entries[0] if entries else None

    async def _check_schema(self) -> None:
        known = await self.client.object_classes()
        if any(oc.lower() not in known for oc in self.ldap.object_classes):
            known = await self.client.object_classes(refresh=True)  # the schema may have grown
        missing = [oc for oc in self.ldap.object_classes if oc.lower() not in known]
        if missing:
            raise LDAPConfigError(f"the directory's schema has no object class {', '.join(missing)}")

    async def _run_queries(self):
        """Run ``search_attribute_queries``; return (attribute values, counter allocations)."""
        values, allocations = {}, []
        try:
            for index, query in enumerate(self.ldap.search_attribute_queries):
                try:
                    entries = await self.client.search(
                        query["search_base"], query["search_filter"], query.get("attributes", ["*"]),
                        size_limit=2,
                    )
                except LDAPConfigError as e:
                    raise LDAPConfigError(
                        f"LDAP.search_attribute_queries[{index}] ({query['search_filter']!r} under"
                        f" {query['search_base']!r}): {e}"
                    ) from e
                if len(entries) != 1:
                    raise LDAPConfigError(
                        f"search_attribute_queries {query['search_filter']} under"
                        f" {query['search_base']} matched {len(entries)} entries, not one"
                    )
                for name, found in entries[0].attributes.items():
                    operation = self.ldap.search_result_operations.get(name)
                    if operation and operation["action"] == INCREMENT_ATTRIBUTE:
                        old, new = await self._increment(operation["modify_dn"], name, found)
                        allocations.append((operation["modify_dn"], name, old, new))
                        found = [new]
                    values[name] = found
        except BaseException:
            await self._undo(allocations)
            raise
        return values, allocations

    async def _increment(self, dn: str, name: str, found: list) -> tuple[str, str]:
        """Atomically move counter ``dn``/``name`` from its current value to +1; return both.

        Within this process allocations from one counter take turns (so concurrent spawns do
        not race each other) and start from the value this process last wrote; the
        delete-old/add-new modify still fails if anyone else moved the counter, and then the
        value is read again after a jittered, growing delay.
        """
        state = _counter_state(self.client.settings, dn, name)
        first, longest = self.ldap.counter_backoff
        async with state.lock:
            current = [state.last] if state.last is not None else found
            for attempt in range(self.ldap.counter_max_attempts):
                if len(current) != 1 or not re.fullmatch(r"-?\d+", current[0]):
                    raise LDAPConfigError(f"counter {name} of {dn} is {current}, not one integer")
                old = current[0]
                new = str(int(old) + 1)
                try:
                    await self.client.modify(dn, {name: [(MODIFY_DELETE, [old]), (MODIFY_ADD, [new])]})
                    state.last = new
                    return old, new
                except DirectoryResultError as e:
                    if e.result != "noSuchAttribute":
                        raise
                state.last = None
                self.log.debug("LDAP: counter %s of %s moved past %s; reading it again", name, dn, old)
                await asyncio.sleep(random.uniform(0, min(longest, first * 2**attempt)))
                entries = await self.client.search(dn, "(objectClass=*)", [name], scope=BASE)
                current = entries[0].attributes.get(name, []) if entries else []
        raise CounterContention(
            f"counter {name} of {dn} changed under {self.ldap.counter_max_attempts} attempts in a row"
        )

    def _keep(self, allocations, why: str) -> None:
        """Leave allocated counter values taken (never handed out again)."""
        for dn, name, _, new in allocations:
            self.log.warning("LDAP: %s=%s of %s stays unused unless user %s's entry has it: %s",
                             name, new, dn, self.user, why)
        allocations.clear()

    async def _undo(self, allocations) -> None:
        """Give allocated counter values back if nobody has taken a later one (best effort).

        Only for values no entry can hold: the add was never sent, or the server refused it."""
        for dn, name, old, new in reversed(allocations):
            _counter_state(self.client.settings, dn, name).last = None
            try:
                await self.client.modify(dn, {name: [(MODIFY_DELETE, [new]), (MODIFY_ADD, [old])]})
                self.log.info("LDAP: returned %s=%s to counter %s", name, new, dn)
            except DirectoryError as e:
                self.log.warning("LDAP: %s=%s of %s stays unused (%s)", name, new, dn, e.detail)
        allocations.clear()

    # ---- output --------------------------------------------------------------------------------
    def _final_values(self, sources: dict, ldap_attributes) -> dict:
        return dynamic_values(
            self.ldap.dynamic_attributes,
            {**sources, LDAP_SEARCH_ATTRIBUTE_QUERY: ldap_attributes},
            self.ldap.max_value_length,
        )

    def _apply_to_spawner(self, values: dict) -> None:
        for name, template in self.ldap.set_spawner_attributes.items():
            value = fill(template, values)
            current = getattr(self.spawner, name, None)
            if isinstance(current, dict) and isinstance(value, dict):
                value = {**current, **value}
            setattr(self.spawner, name, value)


def _allocated(allocations) -> str:
    """`` with uidNumber=10000`` for a log line (counter values are the hub's, not the user's)."""
    return "".join(f" with {name}={new}" for _, name, _, new in allocations)


def _carries(found, attributes: dict, allocations) -> bool:
    """Whether entry attributes ``found`` hold this spawn's counter values where ``attributes``
    (what the spawn tried to add) put them; no counter values: False (cannot tell)."""
    allocated = {new for _, _, _, new in allocations}
    marks = {name: str(value) for name, value in attributes.items() if str(value) in allocated}
    return bool(marks) and all(value in found.get(name, []) for name, value in marks.items())


_options: dict[int, tuple[weakref.ref, LDAP]] = {}


def ldap_options(config) -> LDAP:
    """The ``LDAP`` options for a hub's config object.

    Made once per config object (loading and validating them costs milliseconds of event-loop
    time, which a burst of spawns would pay in one go) and made again after published-style
    class attributes change. The instance is shared: nothing may modify it.
    """
    if LDAP._adopt_class_values():
        _options.clear()
    cached = _options.get(id(config))
    if cached is not None and cached[0]() is config:
        return cached[1]
    ldap = LDAP(config=config)
    _options[id(config)] = (weakref.ref(config), ldap)
    return ldap


@measured
async def setup_ldap_entry_hook(spawner) -> EntryResult:
    """Pre-spawn hook: find or create ``spawner.user``'s LDAP entry (``c.Spawner.pre_spawn_hook``).

    Returns the :class:`EntryResult`; raises :class:`LDAPSpawnError` (a ``SpawnException``) on
    any failure, after logging the detail for the operator.
    """
    try:
        try:
            ldap = ldap_options(spawner.config)
        except TraitError as e:
            raise LDAPConfigError(str(e)) from e
        return await EntrySetup(ldap, spawner).run()
    except (DirectoryError, LDAPConfigError, UserDataError) as e:
        error = spawn_error(e, spawner.user.name)
        spawner.log.error(str(error))
        if isinstance(e, UserDataError) and e.shown != str(e):
            spawner.log.debug("LDAP: user %s was told: %s", spawner.user.name, e.shown)
        raise error from e


async def hello_hook(spawner) -> bool:
    """A pre-spawn hook that only logs a greeting (to check hook wiring)."""
    spawner.log.info("Hello from hook (user %s)", spawner.user.name)
    return True


def chain_hooks(*hooks):
    """One pre-spawn hook that runs ``hooks`` in order, awaiting those that return awaitables.

    The first hook that raises stops the chain (and so the spawn). Returns the last result.
    """

    async def chained(spawner):
        result = None
        for hook in hooks:
            result = hook(spawner)
            if inspect.isawaitable(result):
                result = await result
        return result

    chained.__name__ = "chain_hooks(" + ", ".join(getattr(h, "__name__", repr(h)) for h in hooks) + ")"
    return chained
