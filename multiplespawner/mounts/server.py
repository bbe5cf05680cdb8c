"""A server's storage mounts: from a template's ``mounts`` and the user's auth_state to mounts
on the hub host, and back.

::

    planned = plan(template["mounts"], placeholder_values, auth_state)   # pure; PlanError
    made = await mount_all(planned, server_dir, marker_prefix, uid, gid, progress)  # MountFailed
    state = mounts_to_state(made, server_dir)                            # JSON, for get_state
    made, server_dir = mounts_from_state(state)                          # after a hub restart
    await unmount_all(made, server_dir)                                  # idempotent

Each mount of a server lies at ``<server_dir>/<index>`` (``server_dir``: a root-owned 0700
directory made here), is mounted by root with the ``uid``/``gid`` the notebook's user has and
``allow_other`` (so that user reaches it through a bind mount), and carries the marker
``<marker_prefix><index>``. Messages name the mount (its ``name``) and the cause, never a key
or any other auth_state value. Imports only the standard library, :mod:`.sshfs` and the
catalogue's placeholder resolution (see docs/mounts.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..catalogue import mount_target_parts, resolve_placeholders
from .sshfs import Mount, MountError, SFTPSource, pinned_host_key

__all__ = [
    "MountFailed",
    "Planned",
    "PlanError",
    "Made",
    "mount_all",
    "mounts_from_state",
    "mounts_to_state",
    "plan",
    "unmount_all",
]


class PlanError(ValueError):
    """A required mount cannot be planned (a missing auth_state entry, a bad source): the
    message names the mount and what is missing, never a value."""


class MountFailed(Exception):
    """A required mount failed; every mount made before it has been unmounted."""

    def __init__(self, name: str, cause: str):
        super().__init__(f"Mounting {name} failed: {cause}")
        self.name, self.cause = name, cause


@dataclass(frozen=True)
class Planned:
    """One mount to make: where from, where to (``target``: relative to the user's home),
    with which credential; ``problem`` (for a mount that is not required) says why it cannot
    be made, and then there is no credential."""

    index: int
    name: str
    source: SFTPSource | None
    target: str
    readonly: bool = False
    required: bool = True
    key_pem: str = field(default="", repr=False, compare=False)
    known_hosts_line: str = field(default="", repr=False, compare=False)
    problem: str | None = None


@dataclass
class Made:
    """A mount that was made, with the name and target it was planned with."""

    index: int
    name: str
    target: str
    readonly: bool
    mount: Mount

    @property
    def host_path(self) -> Path:
        return self.mount.target


def check_target(target) -> str:
    """A relative path inside the user's home (:func:`~multiplespawner.catalogue.mount_target_parts`),
    normalised."""
    return "/".join(mount_target_parts(target))


def plan(template_mounts, placeholder_values: dict[str, str], auth_state: dict | None) -> list[Planned]:
    """The mounts of a template (``mounts``, as validated by the catalogue) for one server:
    placeholders in the source resolved with ``placeholder_values`` (the spawner's), the key
    and the pinned host key taken from ``auth_state``. Pure (no I/O).

    A required mount that cannot be made raises :class:`PlanError`; one that is not required
    is returned with its ``problem``."""
    auth_state = auth_state if isinstance(auth_state, dict) else {}
    planned = []
    for index, spec in enumerate(template_mounts or []):
        name = str(spec.get("name") or f"mount {index}")
        required = spec.get("required", True) is not False
        target = spec.get("target")
        try:
            target = check_target(target)
            problem, source, key, host_key = None, None, "", ""
            if spec.get("kind", "sshfs") != "sshfs":
                raise ValueError(f"the mount kind {spec.get('kind')!r} is not supported")
            raw = resolve_placeholders(spec.get("source") or {}, placeholder_values)
            source = SFTPSource(user=raw.get("user", ""), host=raw.get("host", ""),
                                port=raw.get("port", 22), path=raw.get("path", ""))
            credential = spec.get("credential") or {}
            if credential.get("from") != "auth_state":
                raise ValueError("its credential must come from auth_state")
            key_field, host_key_field = credential.get("key_field"), credential.get("host_key_field")
            key = auth_state.get(key_field)
            if not isinstance(key, str) or not key.strip():
                raise ValueError(f"the user's auth_state has no entry {key_field!r} (the storage key); "
                                 "logging in again may provide it")
            host_key = auth_state.get(host_key_field)
            if not isinstance(host_key, str) or not host_key.strip():
                raise ValueError(f"the user's auth_state has no entry {host_key_field!r} (the storage's "
                                 "pinned host key); logging in again may provide it")
            try:
                pinned_host_key(host_key)
            except ValueError:
                raise ValueError(f"the auth_state entry {host_key_field!r} is not a known_hosts line") from None
        except ValueError as e:
            problem = str(e)
            if required:
                raise PlanError(f"Mount {name!r}: {problem}") from None
            source, key, host_key = None, "", ""
        planned.append(Planned(index=index, name=name, source=source, target=target if isinstance(target, str) else "",
                               readonly=bool(spec.get("readonly", False)), required=required,
                               key_pem=key, known_hosts_line=host_key, problem=problem))
    return planned


def _cause(error: BaseException) -> str:
    """The cause of a failed mount without the hub-side path (``... failed: <cause>``)."""
    text = str(error) or type(error).__name__
    return text.split(" failed: ", 1)[1] if " failed: " in text else text


def _make_dirs(server_dir: Path, indexes) -> None:
    server_dir.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        server_dir.mkdir(mode=0o700)
    if server_dir.is_symlink() or not server_dir.is_dir():
        raise MountError(f"{server_dir} is not a directory")
    if os.geteuid() == 0:
        os.chown(server_dir, 0, 0)
    os.chmod(server_dir, 0o700)
    for index in indexes:
        with contextlib.suppress(FileExistsError):
            (server_dir / str(index)).mkdir(mode=0o755)


def _remove_dirs(server_dir: Path | None) -> None:
    """Remove the (empty) mount points and ``server_dir``; never anything with content."""
    if server_dir is None or server_dir.is_symlink() or not server_dir.is_dir():
        return
    for entry in server_dir.iterdir():
        if entry.name.isdigit() and not entry.is_symlink():
            with contextlib.suppress(OSError):
                entry.rmdir()
    with contextlib.suppress(OSError):
        server_dir.rmdir()


async def mount_all(planned: list[Planned], server_dir: Path | str, marker_prefix: str, uid: int | None,
                    gid: int | None, progress_callback: Callable[[str], None], *, timeout: float = 30) -> list[Made]:
    """Make the planned mounts in order at ``<server_dir>/<index>``, saying ``Mounting <name>
    ...`` and ``... done`` / ``... failed: <cause>`` through ``progress_callback``.

    A mount that is not required and fails is skipped (its message says why). A required one
    that fails unmounts every mount made before it and raises :class:`MountFailed`; so does a
    cancellation (re-raised)."""
    server_dir = Path(server_dir)
    made: list[Made] = []
    if not planned:
        return made
    await asyncio.to_thread(_make_dirs, server_dir, [p.index for p in planned])
    try:
        for p in planned:
            progress_callback(f"Mounting {p.name} ...")
            cause = p.problem
            if cause is None:
                try:
                    m = await mount(p.source, server_dir / str(p.index), key_pem=p.key_pem,
                                    known_hosts_line=p.known_hosts_line, marker=f"{marker_prefix}{p.index}",
                                    readonly=p.readonly, uid=uid, gid=gid, allow_other=True, timeout=timeout)
                except (MountError, ValueError) as e:
                    cause = _cause(e)
                else:
                    made.append(Made(p.index, p.name, p.target, p.readonly, m))
                    progress_callback(f"Mounting {p.name} ... done")
                    continue
            if p.required:
                progress_callback(f"Mounting {p.name} ... failed: {cause}")
                raise MountFailed(p.name, cause)
            progress_callback(f"Mounting {p.name} ... failed: {cause}; the server starts without it")
    except BaseException:
        await asyncio.shield(unmount_all(made, server_dir))
        raise
    return made


async def mount(*args, **kwargs) -> Mount:
    """:func:`.sshfs.mount` (looked up at call time, so tests may replace it)."""
    from . import sshfs

    return await sshfs.mount(*args, **kwargs)


async def unmount_all(made: list[Made], server_dir: Path | str | None = None) -> list[str]:
    """Unmount ``made`` (last first) and remove ``server_dir``'s empty mount points and itself.
    Idempotent. Returns the problems (a mount still there), empty when all went."""
    problems = []
    for m in reversed(list(made)):
        try:
            await m.mount.unmount()
        except Exception as e:  # noqa: BLE001 - every mount gets its try
            problems.append(f"{m.name}: {e}")
    if server_dir is not None:
        await asyncio.to_thread(_remove_dirs, Path(server_dir))
    return problems


def mounts_to_state(made: list[Made], server_dir: Path | str | None) -> dict:
    """JSON for the spawner's state: the server directory and each mount's state."""
    return {
        "server_dir": str(server_dir) if server_dir is not None else None,
        "mounts": [{"index": m.index, "name": m.name, "target": m.target, "readonly": m.readonly,
                    "mount": m.mount.to_state()} for m in made],
    }


def mounts_from_state(state: dict | None) -> tuple[list[Made], Path | None]:
    """(mounts, server directory) from :func:`mounts_to_state`'s JSON; entries that cannot be
    read are left out."""
    if not isinstance(state, dict):
        return [], None
    made = []
    for entry in state.get("mounts") or []:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            made.append(Made(int(entry["index"]), str(entry["name"]), str(entry["target"]),
                             bool(entry.get("readonly")), Mount.from_state(entry["mount"])))
    server_dir = state.get("server_dir")
    return made, Path(server_dir) if server_dir else None
