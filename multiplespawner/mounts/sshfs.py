"""Mount an SFTP source with sshfs on the hub host; unmount it, check it, find leftovers.

Contract in short (details in docs/mounts.md)::

    source = SFTPSource(user="ada", host="storage.example.org", port=22, path="/home/ada")
    m = await mount(source, Path("/srv/mounts/ada"), key_pem=PEM, known_hosts_line=LINE,
                    marker="hub1-ada")                   # -> Mount, or raises MountError
    await m.alive()                                      # in mountinfo and the target answers
    state = m.to_state()                                 # JSON; Mount.from_state(state) later
    await m.unmount()                                    # idempotent
    find_stale("hub1-", keep={"hub1-bob"})               # mounts of this suite a reaper may remove
    await unmount_path(path)                             # unmount one of them and stop its agent

The private key is never written to a file, never put in a process's argv or environment: it
goes once, through a pipe, to ``ssh-add -``, which hands it to an ``ssh-agent`` started for
this mount alone. The agent listens on a socket inside a fresh 0700 directory (the *private
directory*) owned by the user the mount runs as; that directory also holds the pinned host key
(a known_hosts file with that one line) and sshfs's log (its stderr and ssh's). sshfs then runs
in the foreground (``-f``) under our control with ``IdentityAgent`` pointing at the socket,
``BatchMode``, ``StrictHostKeyChecking=yes`` against the pinned key only, no ssh configuration
file (``-F none``), and ``fsname=sshfs-<marker>`` so that this suite's mounts can be found in
``/proc/self/mountinfo`` later.

With ``as_user`` the agent, ``ssh-add`` and sshfs run as that Unix user (``setpriv``, which
execs the program so the PID we hold is the program's), and the setuid ``fusermount3`` makes
the mount: the user's own mount, as if they had run sshfs themselves.

Everything runs as asyncio subprocesses with bounded timeouts; the few file operations and
user look-ups (NSS may ask a directory server) run in threads. A failed mount undoes what it
did (unmounts, stops the agent and sshfs by PID, removes the private directory) and raises
:class:`MountError` naming the source (``user@host:port:path``, never the key) and the cause
found in ssh's messages. Standard library only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import pwd
import re
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "FoundMount",
    "Mount",
    "MountError",
    "SFTPSource",
    "find_mounts",
    "find_stale",
    "mount",
    "sshfs_argv",
    "unmount_path",
]

FSTYPE = "fuse.sshfs"
#: the fsname of every mount of this module is ``FSNAME_PREFIX + marker``
FSNAME_PREFIX = "sshfs-"
#: the name under which the pinned host key is looked up (``HostKeyAlias``)
HOST_KEY_ALIAS = "sshfs-mount-storage"
AGENT_SOCKET = "agent.sock"
KNOWN_HOSTS = "known_hosts"
LOG_FILE = "sshfs.log"
PRIVATE_DIR_PREFIX = "sshfs-"
SERVER_ALIVE_INTERVAL = 15
SERVER_ALIVE_COUNT_MAX = 3
#: a fixed PATH for the programs started here (the hub's own environment is not passed on)
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_MARKER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HOST_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}")
_USER_RE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.$-]{0,63}")
_KEY_TYPE_RE = re.compile(r"(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class MountError(Exception):
    """A mount, unmount or check failed; the message names the source and the cause, never a key."""


# -- the source ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SFTPSource:
    """Where the files are: ``user`` logs in to ``host:port`` over SSH and ``path`` is mounted.

    ``path`` is absolute, or empty for the login's home directory. Construction refuses
    whitespace, control characters and a leading ``-`` anywhere (they could become options
    of sshfs or ssh), ``@``, ``:`` and ``/`` in ``user``, anything but letters, digits, ``.``,
    ``_`` and ``-`` in ``host`` (IPv6 literals are not supported yet) and ports outside 1-65535.
    """

    user: str
    host: str
    port: int = 22
    path: str = ""

    def __post_init__(self):
        for name in ("user", "host", "path"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ValueError(f"SFTP source {name} must be a string")
            if _CONTROL.search(value) or any(c.isspace() for c in value):
                raise ValueError(f"SFTP source {name} must not contain whitespace or control characters")
            if value.startswith("-"):
                raise ValueError(f"SFTP source {name} must not start with '-'")
        if not _USER_RE.fullmatch(self.user):
            raise ValueError("SFTP source user must be 1-64 characters of letters, digits, '.', '_', '-', '$'")
        if not _HOST_RE.fullmatch(self.host) or ".." in self.host:
            raise ValueError("SFTP source host must be a host name or an IPv4 address")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ValueError("SFTP source port must be an integer in 1-65535")
        if self.path and not self.path.startswith("/"):
            raise ValueError("SFTP source path must be absolute or empty (the login's home)")
        if len(self.path) > 4096:
            raise ValueError("SFTP source path is too long")

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}:{self.path}"

    def remote(self) -> str:
        """The ``user@host:path`` argument of sshfs."""
        return f"{self.user}@{self.host}:{self.path}"

    def to_state(self) -> dict:
        return {"user": self.user, "host": self.host, "port": self.port, "path": self.path}

    @classmethod
    def from_state(cls, state: dict) -> "SFTPSource":
        return cls(user=state["user"], host=state["host"], port=int(state["port"]), path=state.get("path", ""))


def check_marker(marker: str) -> str:
    """A marker is 1-64 letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit."""
    if not isinstance(marker, str) or not _MARKER_RE.fullmatch(marker):
        raise ValueError("mount marker must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return marker


def pinned_host_key(known_hosts_line: str) -> str:
    """``"<type> <base64>"`` from a known_hosts line (``[host]:port type key [comment]``) or a
    bare ``type key``. Refuses markers (``@cert-authority``, ``@revoked``), several lines and
    anything that is not a key."""
    if not isinstance(known_hosts_line, str) or "\n" in known_hosts_line.strip() or "\r" in known_hosts_line:
        raise ValueError("the pinned host key must be one known_hosts line")
    fields = known_hosts_line.split()
    if not fields or fields[0].startswith("@"):
        raise ValueError("the pinned host key must be a plain known_hosts line (no @ markers)")
    if _KEY_TYPE_RE.fullmatch(fields[0]):
        key_fields = fields[:2]
    else:
        key_fields = fields[1:3]
    if len(key_fields) != 2 or not _KEY_TYPE_RE.fullmatch(key_fields[0]):
        raise ValueError("the pinned host key line holds no key type")
    try:
        blob = base64.b64decode(key_fields[1], validate=True)
    except ValueError:
        raise ValueError("the pinned host key is not base64") from None
    if len(blob) < 16:
        raise ValueError("the pinned host key is too short")
    return f"{key_fields[0]} {key_fields[1]}"


# -- argv ------------------------------------------------------------------------------------
def _option_value(value: str, what: str) -> str:
    """A value that goes inside ``-o a=b,c=d``: no commas, whitespace or control characters."""
    if "," in value or _CONTROL.search(value) or any(c.isspace() for c in value):
        raise MountError(f"{what} {value!r} cannot be passed to sshfs (commas, whitespace or control characters)")
    return value


def sshfs_argv(source: SFTPSource, target: Path, *, agent_socket: Path, known_hosts_file: Path,
               marker: str, readonly: bool = False, uid: int | None = None, gid: int | None = None,
               allow_other: bool = False, connect_timeout: int = 30, sshfs: str = "sshfs") -> list[str]:
    """The sshfs command line (in the foreground, ``-f``). It names the agent's socket and the
    pinned key's file, never a key. ``allow_other`` adds ``default_permissions``: the kernel
    then checks the files' modes against ``uid``/``gid`` for every local user."""
    check_marker(marker)
    options = [
        f"IdentityAgent={_option_value(str(agent_socket), 'agent socket')}",
        "IdentitiesOnly=no",
        "IdentityFile=none",
        "BatchMode=yes",
        "PreferredAuthentications=publickey",
        "PasswordAuthentication=no",
        "KbdInteractiveAuthentication=no",
        "StrictHostKeyChecking=yes",
        f"UserKnownHostsFile={_option_value(str(known_hosts_file), 'known hosts file')}",
        "GlobalKnownHostsFile=/dev/null",
        f"HostKeyAlias={HOST_KEY_ALIAS}",
        "CheckHostIP=no",
        "UpdateHostKeys=no",
        "ConnectionAttempts=1",
        f"ConnectTimeout={max(1, int(connect_timeout))}",
        f"ServerAliveInterval={SERVER_ALIVE_INTERVAL}",
        f"ServerAliveCountMax={SERVER_ALIVE_COUNT_MAX}",
        "reconnect",
        f"fsname={FSNAME_PREFIX}{marker}",
    ]
    if readonly:
        options.append("ro")
    if uid is not None:
        options.append(f"uid={int(uid)}")
    if gid is not None:
        options.append(f"gid={int(gid)}")
    if allow_other:
        options += ["allow_other", "default_permissions"]
    argv = [sshfs, "-f", source.remote(), str(target), "-p", str(source.port), "-F", "none"]
    for option in options:
        argv += ["-o", option]
    return argv


# -- what went wrong -------------------------------------------------------------------------
_CAUSES = [
    (re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed|"
                r"host key .* is known|No .* host key is known|Host key .* mismatch", re.I),
     "host key mismatch: the server's host key is not the pinned one"),
    (re.compile(r"Permission denied \(|Too many authentication failures|no mutual signature|"
                r"Authentication failed", re.I),
     "auth refused: the server did not accept the key"),
    (re.compile(r"Connection refused", re.I), "connection refused"),
    (re.compile(r"Connection timed out|Operation timed out|timed out during banner", re.I),
     "timeout: the server did not answer"),
    (re.compile(r"Could not resolve hostname|Name or service not known", re.I), "unknown host"),
    (re.compile(r"No route to host|Network is unreachable", re.I), "host unreachable"),
    (re.compile(r"user_allow_other", re.I), "allow_other needs user_allow_other in /etc/fuse.conf"),
    (re.compile(r"failed to open /dev/fuse", re.I),
     "the user may not use FUSE: /dev/fuse is not open to them (Debian's udev rule makes it 0666)"),
    (re.compile(r"No such file or directory", re.I), "the remote path does not exist"),
    (re.compile(r"Connection (closed|reset) by", re.I), "the server closed the connection"),
]


def classify_error(stderr: str) -> str:
    """The cause of a failed mount from sshfs's and ssh's messages (bounded; no key material
    ever appears there): one of the fixed phrases, or the last line of the messages."""
    for pattern, cause in _CAUSES:
        if pattern.search(stderr):
            return cause
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "sshfs exited without a message"
    return _CONTROL.sub("?", lines[-1])[:300]


# -- /proc -----------------------------------------------------------------------------------
def _unescape(text: str) -> str:
    """``/proc/self/mountinfo`` writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


@dataclass(frozen=True)
class FoundMount:
    """One sshfs mount of this module found in ``/proc/self/mountinfo``."""

    path: Path
    marker: str


def _mountinfo(mountinfo: str = "/proc/self/mountinfo") -> list[tuple[Path, str, str]]:
    """(mount point, fstype, source) of each mount, in mount order."""
    entries = []
    try:
        text = Path(mountinfo).read_text()
    except OSError:
        return entries
    for line in text.splitlines():
        before, sep, after = line.partition(" - ")
        if not sep:
            continue
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 2:
            continue
        entries.append((Path(_unescape(fields[4])), tail[0], _unescape(tail[1])))
    return entries


def _mount_at(path: Path, mountinfo: str = "/proc/self/mountinfo") -> tuple[str, str] | None:
    """(fstype, source) of the top-most mount at ``path``, or None."""
    found = None
    for point, fstype, source in _mountinfo(mountinfo):
        if point == path:
            found = (fstype, source)
    return found


def find_mounts(marker_prefix: str = "", mountinfo: str = "/proc/self/mountinfo") -> list[FoundMount]:
    """The sshfs mounts of this module whose marker starts with ``marker_prefix``."""
    found = []
    for point, fstype, source in _mountinfo(mountinfo):
        if fstype == FSTYPE and source.startswith(FSNAME_PREFIX + marker_prefix):
            found.append(FoundMount(point, source[len(FSNAME_PREFIX):]))
    return found


def find_stale(marker_prefix: str, keep=(), mountinfo: str = "/proc/self/mountinfo") -> list[Path]:
    """Mount points of this module's mounts whose marker starts with ``marker_prefix`` and is
    not in ``keep`` (the markers of the mounts still wanted): what a reaper may unmount with
    :func:`unmount_path`. An empty prefix is refused (it would match other hubs' mounts)."""
    if not marker_prefix:
        raise ValueError("find_stale needs a non-empty marker prefix")
    keep = set(keep)
    return [m.path for m in find_mounts(marker_prefix, mountinfo) if m.marker not in keep]


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def _running(pid: int | None) -> bool:
    """The process exists and is not a zombie."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _is_agent(pid: int | None, socket: Path) -> bool:
    argv = _cmdline(pid) if pid else []
    return len(argv) >= 4 and os.path.basename(argv[0]) == "ssh-agent" and argv[-1] == str(socket)


def _is_sshfs(pid: int | None, target: Path, marker: str) -> bool:
    argv = _cmdline(pid) if pid else []
    return (bool(argv) and os.path.basename(argv[0]) == "sshfs" and str(target) in argv
            and f"fsname={FSNAME_PREFIX}{marker}" in argv)


def _sshfs_processes(target: Path, marker: str) -> list[tuple[int, Path | None]]:
    """(PID, agent socket) of the sshfs processes serving ``target`` with ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _is_sshfs(int(entry), target, marker):
            socket = None
            for arg in _cmdline(int(entry)):
                if arg.startswith("IdentityAgent="):
                    socket = Path(arg.split("=", 1)[1])
            found.append((int(entry), socket))
    return found


def _agent_processes(socket: Path) -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and _is_agent(int(e), socket)]


# -- processes -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Runner:
    """Who the programs run as: root (the hub) or ``as_user`` through setpriv."""

    user: str | None
    uid: int
    gid: int
    home: str

    def argv(self, argv: list[str]) -> list[str]:
        if self.user is None:
            return argv
        setpriv = shutil.which("setpriv", path=SAFE_PATH) or "setpriv"
        return [setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--", *argv]

    def env(self, **extra) -> dict:
        name = self.user or "root"
        return {"PATH": SAFE_PATH, "HOME": self.home, "USER": name, "LOGNAME": name, "LANG": "C", **extra}


async def _runner_for(as_user: str | None) -> _Runner:
    if as_user is None:
        return _Runner(None, os.getuid(), os.getgid(), "/root" if os.getuid() == 0 else tempfile.gettempdir())
    try:
        pw = await asyncio.to_thread(pwd.getpwnam, as_user)
    except KeyError:
        raise MountError(f"no Unix user {as_user!r}") from None
    return _Runner(as_user, pw.pw_uid, pw.pw_gid, pw.pw_dir)


def _binary(name: str) -> str:
    path = shutil.which(name, path=SAFE_PATH)
    if path is None:
        raise MountError(f"{name} is not installed (Debian: sshfs, fuse3, openssh-client)")
    return path


async def _wait_gone(pid: int | None, proc: asyncio.subprocess.Process | None, timeout: float) -> bool:
    """Wait until the process has exited (reaped if it is our child); True if it is gone."""
    if proc is not None:
        try:
            await asyncio.wait_for(proc.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
    deadline = time.monotonic() + timeout
    while _running(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _stop(pid: int | None, proc, is_ours, grace: float = 3) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds, the process ``pid`` if ``is_ours()`` still
    says it is the one we started (a PID from saved state may have been reused since)."""
    if not pid:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        if proc is None and not is_ours():
            return
        if proc is not None and proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if await _wait_gone(pid, proc, wait):
            return


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL a child that overran its time and reap it (waiting 2 s at most)."""
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(proc.wait(), 2)


async def _run(argv: list[str], timeout: float, env: dict | None = None) -> tuple[int | None, str]:
    """Run a short command; (returncode or None on timeout, stderr). Killed on timeout."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env=env or {"PATH": SAFE_PATH, "LANG": "C"})
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        await _kill(proc)
        return None, ""
    return proc.returncode, err.decode(errors="replace")


async def _probe(target: Path, runner: _Runner, timeout: float) -> str | None:
    """None if the file system at ``target`` answers (see :meth:`Mount.alive`), else why not."""
    missing = target / f".sshfs-probe-{os.urandom(6).hex()}"
    proc = await asyncio.create_subprocess_exec(
        *runner.argv([_binary("stat"), "-c", "%i", "--", str(target), str(missing)]),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=runner.env())
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        await _kill(proc)
        return "timeout: the file system did not answer"
    lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
    if len(out.split()) == 1 and len(lines) == 1 and lines[0].endswith("No such file or directory"):
        return None
    return lines[0].split(": ", 1)[-1] if lines else "unexpected answer"


async def _fusermount_unmount(target: Path, timeout: float) -> None:
    """``fusermount3 -u``; if that fails or hangs, ``fusermount3 -u -z`` (lazy: the mount leaves
    the namespace now and goes away when nobody uses it any more)."""
    fusermount = _binary("fusermount3")
    code, _ = await _run([fusermount, "-u", "--", str(target)], timeout)
    if code == 0:
        return
    await _run([fusermount, "-u", "-z", "--", str(target)], timeout)


def _remove_private_dir(path: Path | None) -> None:
    """Remove a private directory made by :func:`mount` (named ``sshfs-...``, holding the
    pinned key's file), refusing anything else."""
    if path is None or not path.name.startswith(PRIVATE_DIR_PREFIX) or path.is_symlink():
        return
    if not (path / KNOWN_HOSTS).is_file():
        return
    shutil.rmtree(path, ignore_errors=True)


# -- a mount ---------------------------------------------------------------------------------
@dataclass(eq=False)
class Mount:
    """One sshfs mount and what serves it: the sshfs process, the agent, the private directory.

    ``to_state()`` is a small JSON-serialisable dict; ``from_state()`` rebuilds the object in a
    restarted hub so that :meth:`unmount` still finds and stops everything (PIDs are checked
    against the process's command line before any signal, so a reused PID is never hit).
    """

    source: SFTPSource
    target: Path
    marker: str
    private_dir: Path | None = None
    agent_pid: int | None = None
    sshfs_pid: int | None = None
    as_user: str | None = None
    _agent: asyncio.subprocess.Process | None = field(default=None, repr=False)
    _sshfs: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def agent_socket(self) -> Path | None:
        return self.private_dir / AGENT_SOCKET if self.private_dir else None

    def to_state(self) -> dict:
        return {
            "source": self.source.to_state(),
            "target": str(self.target),
            "marker": self.marker,
            "private_dir": str(self.private_dir) if self.private_dir else None,
            "agent_pid": self.agent_pid,
            "sshfs_pid": self.sshfs_pid,
            "as_user": self.as_user,
        }

    @classmethod
    def from_state(cls, state: dict) -> "Mount":
        private_dir = state.get("private_dir")
        return cls(
            source=SFTPSource.from_state(state["source"]),
            target=Path(state["target"]),
            marker=check_marker(state["marker"]),
            private_dir=Path(private_dir) if private_dir else None,
            agent_pid=int(state["agent_pid"]) if state.get("agent_pid") else None,
            sshfs_pid=int(state["sshfs_pid"]) if state.get("sshfs_pid") else None,
            as_user=state.get("as_user"),
        )

    def mounted(self) -> bool:
        """The top-most mount at the target is this one (``/proc/self/mountinfo``)."""
        return _mount_at(self.target) == (FSTYPE, FSNAME_PREFIX + self.marker)

    async def alive(self, timeout: float = 5) -> bool:
        """The mount is in ``/proc/self/mountinfo`` as ``fuse.sshfs`` with this marker and the
        file system answers within ``timeout`` seconds: a ``stat`` of the target and of a name
        that does not exist under it (a lookup the kernel cannot answer from its caches, so it
        reaches sshfs and the server). The ``stat`` runs as the mounting user in a subprocess:
        a hung FUSE call blocks only that subprocess, which is killed. False also when the
        mounting user no longer exists."""
        if not self.mounted():
            return False
        try:
            runner = await _runner_for(self.as_user)
        except MountError:
            return False
        return await _probe(self.target, runner, timeout) is None

    async def unmount(self, timeout: float = 10) -> None:
        """Unmount (``fusermount3 -u``, lazily after ``timeout``), stop sshfs and the agent by
        PID, remove the private directory. Idempotent; raises :class:`MountError` only if the
        target is still mounted at the end."""
        if self.mounted():
            await _fusermount_unmount(self.target, timeout)
        # sshfs exits by itself once unmounted (or once its connection is gone)
        ours = lambda: _is_sshfs(self.sshfs_pid, self.target, self.marker)  # noqa: E731
        if self.sshfs_pid and (self._sshfs is not None or ours()):
            if not await _wait_gone(self.sshfs_pid, self._sshfs, 3):
                await _stop(self.sshfs_pid, self._sshfs, ours)
        if self.agent_pid:
            await _stop(self.agent_pid, self._agent, lambda: _is_agent(self.agent_pid, self.agent_socket))
        await asyncio.to_thread(_remove_private_dir, self.private_dir)
        if self.mounted():
            raise MountError(f"unmounting {self.source} from {self.target} failed: still mounted")


async def mount(source: SFTPSource, target: Path | str, *, key_pem: str, known_hosts_line: str,
                marker: str, as_user: str | None = None, readonly: bool = False,
                uid: int | None = None, gid: int | None = None, allow_other: bool = False,
                timeout: float = 30, runtime_dir: Path | str | None = None) -> Mount:
    """Mount ``source`` on the existing directory ``target`` with sshfs; return the :class:`Mount`.

    * ``key_pem``: the OpenSSH private key (unencrypted); it reaches only ``ssh-add``'s stdin.
    * ``known_hosts_line``: the server's pinned host key (``[host]:port type key`` or ``type key``);
      no other key is accepted, nothing is learnt on first use.
    * ``marker``: names the mount (``fsname=sshfs-<marker>``) for :func:`find_stale`.
    * ``as_user``: run everything as this Unix user (the mount is theirs; the target must be
      writable by them); ``uid``/``gid`` then default to the user's.
    * ``readonly``, ``uid``/``gid`` (the owner the files show), ``allow_other`` (other local
      users, e.g. a container's, may use the mount; adds ``default_permissions``).
    * ``timeout``: for the whole mount, from the agent's start to the file system answering.
    * ``runtime_dir``: where the private directory is made (default: the system's temp dir).

    Raises :class:`MountError` (source and cause, never the key) after undoing everything;
    ``ValueError`` for a bad marker or host key line before anything starts.
    """
    if not isinstance(source, SFTPSource):
        raise TypeError("source must be an SFTPSource")
    check_marker(marker)
    host_key = pinned_host_key(known_hosts_line)
    if not isinstance(key_pem, str) or not key_pem.strip() or "\0" in key_pem:
        raise ValueError("key_pem must be a non-empty private key text")
    target = Path(target)
    if not target.is_absolute():
        raise ValueError("the mount target must be an absolute path")
    deadline = time.monotonic() + timeout
    what = f"mounting {source} on {target}"
    binaries = {name: _binary(name) for name in ("ssh-agent", "ssh-add", "sshfs", "fusermount3")}
    runner = await _runner_for(as_user)
    if as_user is not None:
        uid = runner.uid if uid is None else uid
        gid = runner.gid if gid is None else gid

    def prepare() -> tuple[Path, Path, int]:
        real = Path(os.path.realpath(target))
        if not real.is_dir():
            raise MountError(f"{what} failed: the target is not a directory")
        if _mount_at(real) is not None:
            raise MountError(f"{what} failed: something is already mounted there")
        private = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_DIR_PREFIX}{marker[:32]}-", dir=runtime_dir))
        try:
            os.chmod(private, 0o700)
            known = private / KNOWN_HOSTS
            fd = os.open(known, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"{HOST_KEY_ALIAS} {host_key}\n")
            log = os.open(private / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            for path in (private, known, private / LOG_FILE):
                os.chown(path, runner.uid, runner.gid)
        except BaseException:
            shutil.rmtree(private, ignore_errors=True)
            raise
        return real, private, log

    real_target, private, log_fd = await asyncio.to_thread(prepare)
    m = Mount(source=source, target=real_target, marker=marker, private_dir=private, as_user=as_user)
    what = f"mounting {source} on {real_target}"
    try:
        if len(str(m.agent_socket).encode()) > 100:
            raise MountError(f"{what} failed: the private directory's path is too long for a socket")
        argv = sshfs_argv(source, real_target, agent_socket=m.agent_socket, known_hosts_file=private / KNOWN_HOSTS,
                          marker=marker, readonly=readonly, uid=uid, gid=gid, allow_other=allow_other,
                          connect_timeout=max(1, int(timeout)), sshfs=binaries["sshfs"])

        # 1. the agent: ours alone, in the foreground (-D) so that its PID is the one we hold
        m._agent = await asyncio.create_subprocess_exec(
            *runner.argv([binaries["ssh-agent"], "-D", "-a", str(m.agent_socket)]),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, env=runner.env(), start_new_session=True)
        m.agent_pid = m._agent.pid
        while not await asyncio.to_thread(m.agent_socket.exists):
            if m._agent.returncode is not None:
                raise MountError(f"{what} failed: ssh-agent exited ({m._agent.returncode})")
            if time.monotonic() > deadline:
                raise MountError(f"{what} failed: timeout: ssh-agent did not start")
            await asyncio.sleep(0.02)

        # 2. the key, through a pipe to ssh-add's stdin
        add = await asyncio.create_subprocess_exec(
            *runner.argv([binaries["ssh-add"], "-q", "-"]),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env=runner.env(SSH_AUTH_SOCK=str(m.agent_socket)))
        pem = key_pem if key_pem.endswith("\n") else key_pem + "\n"
        try:
            _, err = await asyncio.wait_for(add.communicate(pem.encode()), max(0.1, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                add.kill()
            await add.wait()
            raise MountError(f"{what} failed: timeout: ssh-add did not finish") from None
        if add.returncode != 0:
            raise MountError(f"{what} failed: the agent did not take the key (not an unencrypted OpenSSH "
                             f"private key?): {classify_error(err.decode(errors='replace'))}")

        # 3. sshfs in the foreground; its stderr (and ssh's) goes to the log in the private dir
        m._sshfs = await asyncio.create_subprocess_exec(
            *runner.argv(argv), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=log_fd, env=runner.env(), start_new_session=True)
        m.sshfs_pid = m._sshfs.pid
        os.close(log_fd)
        log_fd = None
        # sshfs shows the mount before its connection is up: wait for the mount, then for the
        # file system to answer (which needs the SFTP session), or for sshfs to give up
        while not m.mounted():
            if m._sshfs.returncode is not None:
                raise MountError(f"{what} failed: {classify_error(await _read_log(private))}")
            if time.monotonic() > deadline:
                raise MountError(f"{what} failed: {await _timeout_cause(private, timeout)}")
            await asyncio.sleep(0.05)
        problem = await _probe(real_target, runner, max(0.5, deadline - time.monotonic()))
        if problem is None and (m._sshfs.returncode is not None or not m.mounted()):
            # sshfs gave up (e.g. the connection was refused) and its mount went away before
            # the probe ran: the probe then answered from the bare directory underneath
            problem = "sshfs exited before the file system answered"
        if problem is not None:
            # let sshfs finish writing why (it exits when the first connection fails)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(m._sshfs.wait(), max(0.1, min(2, deadline - time.monotonic())))
            log = await _read_log(private)
            if m._sshfs.returncode is None and time.monotonic() >= deadline:
                raise MountError(f"{what} failed: {await _timeout_cause(private, timeout)}")
            raise MountError(f"{what} failed: {classify_error(log) if log.strip() else problem}")
        return m
    except BaseException:
        if log_fd is not None:
            os.close(log_fd)
        with contextlib.suppress(Exception):
            await asyncio.shield(m.unmount())
        raise


async def _timeout_cause(private: Path, timeout: float) -> str:
    log = await _read_log(private)
    return f"timeout after {timeout:g}s ({classify_error(log) if log.strip() else 'no answer'})"


async def _read_log(private: Path, limit: int = 16384) -> str:
    def read():
        try:
            with open(private / LOG_FILE, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    return await asyncio.to_thread(read)


async def unmount_path(path: Path | str, timeout: float = 10) -> None:
    """Unmount a mount of this module found by :func:`find_stale` (no :class:`Mount` needed):
    ``fusermount3 -u`` (lazily after ``timeout``), then stop the sshfs process serving it and
    the agent its command line names, and remove that agent's private directory. Refuses a
    path where no sshfs mount of this module is; idempotent once it is gone."""
    path = Path(os.path.abspath(path))  # not realpath: that would stat a possibly hung mount
    found = _mount_at(path)
    if found is None:
        return
    fstype, fsname = found
    if fstype != FSTYPE or not fsname.startswith(FSNAME_PREFIX):
        raise MountError(f"{path} is not an sshfs mount of this suite ({fstype} {fsname})")
    marker = fsname[len(FSNAME_PREFIX):]
    processes = await asyncio.to_thread(_sshfs_processes, path, marker)
    await _fusermount_unmount(path, timeout)
    for pid, socket in processes:
        if not await _wait_gone(pid, None, 3):
            await _stop(pid, None, lambda pid=pid: _is_sshfs(pid, path, marker))
        if socket is None:
            continue
        for agent in await asyncio.to_thread(_agent_processes, socket):
            await _stop(agent, None, lambda agent=agent, socket=socket: _is_agent(agent, socket))
        await asyncio.to_thread(_remove_private_dir, socket.parent)
    if _mount_at(path) == found:
        raise MountError(f"unmounting {path} failed: still mounted")
