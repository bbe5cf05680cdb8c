"""multiplespawner.mounts.sshfs against a real OpenSSH server as the storage: sshfs, ssh-agent
and FUSE for real, as root and as a Unix test user.

Every test checks that a failure or an unmount leaves nothing behind: no mount, no sshfs, ssh
or agent process (by PID), no private directory; and that the private key is in no process's
argv or environment and in no file.
"""

import asyncio
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from multiplespawner.mounts.sshfs import (
    FoundMount,
    Mount,
    MountError,
    SFTPSource,
    find_mounts,
    find_stale,
    mount,
    unmount_path,
)
from tests.fixtures.procs import running
from tests.fixtures.sshd import make_client_key


# -- helpers ---------------------------------------------------------------------------------
def new_key() -> tuple[str, str]:
    """(private PEM, public line) of a fresh key whose files are deleted at once: the test
    holds the key in memory only, so any copy found later was made by the code under test."""
    keydir = Path(tempfile.mkdtemp(prefix="mount-key-", dir="/run"))
    try:
        path, public = make_client_key(keydir)
        return path.read_text(), public
    finally:
        shutil.rmtree(keydir)


def key_fragments(pem: str) -> list[bytes]:
    """The base64 lines of the private key's body that are this key's own (any of them found
    anywhere is a leak). The first line (format header, key type) and the last (comment,
    padding) are the same for every ed25519 key of the fixture and are left out."""
    lines = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    assert len(lines) >= 4
    return [line.encode() for line in lines[1:-1]]


def ssh_of(m: Mount) -> list[int]:
    """The ssh client(s) sshfs started for ``m`` (sshfs double-forks: they are not its children)."""
    return [pid for pid in processes_mentioning(str(m.agent_socket))
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"/ssh")
            or Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ssh\0")]


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and entry != str(os.getpid()):
            with contextlib.suppress(OSError):
                if text.encode() in Path(f"/proc/{entry}/cmdline").read_bytes() and running(entry):
                    found.append(int(entry))
    return found


def leaks_in_processes(fragments) -> list[str]:
    leaks = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for what in ("cmdline", "environ"):
            with contextlib.suppress(OSError):
                data = Path(f"/proc/{entry}/{what}").read_bytes()
                if any(f in data for f in fragments):
                    leaks.append(f"{entry}/{what}")
    return leaks


def leaks_in_files(root: Path, fragments) -> list[str]:
    """Files under ``root`` (not crossing into other file systems) that hold a fragment."""
    leaks, dev = [], os.stat(root).st_dev
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if _same_dev(Path(dirpath) / d, dev)]
        for name in filenames:
            path = Path(dirpath) / name
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode) and st.st_size < 1 << 20:
                    data = path.read_bytes()
                    if any(f in data for f in fragments):
                        leaks.append(str(path))
    return leaks


def _same_dev(path: Path, dev: int) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_dev == dev


def mounted_at(path: Path) -> bool:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if line.split()[4] == str(path):
            return True
    return False


def as_user(user: str, *argv: str, check=True) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True, timeout=30,
                          check=check)


async def eventually(predicate, timeout: float, message: str) -> float:
    start = time.monotonic()
    while not await predicate():
        assert time.monotonic() - start < timeout, f"{message} not within {timeout}s"
        await asyncio.sleep(0.1)
    return time.monotonic() - start


# -- fixtures --------------------------------------------------------------------------------
class Storage:
    """The storage server (sshd as root login), a source directory with one file, a key."""

    def __init__(self, sshd, source_dir: Path):
        self.sshd = sshd
        self.dir = source_dir
        self.key_pem, public = new_key()
        sshd.authorize("root", public)
        self.source = SFTPSource("root", sshd.host, sshd.port, str(source_dir))

    def kwargs(self, marker: str, **extra) -> dict:
        return dict(key_pem=self.key_pem, known_hosts_line=self.sshd.known_hosts_line(), marker=marker, **extra)


@pytest.fixture
def storage(sshd, tmp_path):
    source_dir = tmp_path / "storage"
    source_dir.mkdir()
    (source_dir / "existing.txt").write_text("from the server\n")
    return Storage(sshd, source_dir)


@pytest.fixture
def workdir():
    """A short-pathed scratch directory (0755, so test users can reach what is inside):
    ``runtime`` for private directories and room for mount targets. Leftover mounts in it are
    unmounted, and processes a failed test left (agents, sshfs: their command lines name a path
    in it), killed by PID before it is removed."""
    base = Path(tempfile.mkdtemp(prefix="mnt-", dir="/tmp"))
    base.chmod(0o755)
    (base / "runtime").mkdir(mode=0o755)
    yield base
    for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
        point = line.split()[4]
        if " - fuse.sshfs sshfs-t-" in line and point.startswith(f"{base}/"):
            subprocess.run(["fusermount3", "-u", "-z", point], capture_output=True)
    for pid in processes_mentioning(str(base)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def marker():
    return f"t-{secrets.token_hex(4)}"


@pytest.fixture
def user_dir(unix_user, workdir):
    """(user name, pwd entry, directory owned by the user 0700 inside which targets go)."""
    name = unix_user("mnt")
    pw = pwd.getpwnam(name)
    home = workdir / name
    home.mkdir(mode=0o700)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    return name, pw, home


@pytest.fixture
def user_fuse():
    """Unprivileged FUSE needs ``/dev/fuse`` open to users: 0666 is what Debian's udev rule gives
    it; machines without udev create it 0600. Made 0666 for the test, restored after."""
    old = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
    if old & 0o006 != 0o006:
        os.chmod("/dev/fuse", 0o666)
    yield
    os.chmod("/dev/fuse", old)


def make_target(parent: Path, pw=None) -> Path:
    target = parent / "storage"
    target.mkdir()
    if pw is not None:
        os.chown(target, pw.pw_uid, pw.pw_gid)
    return target


async def assert_nothing_left(m: Mount, ssh_pids=()) -> None:
    """No mount, no private directory, sshfs and the agent gone; the ssh clients sshfs started
    (not our children) exit a moment after sshfs, so they get a short grace."""
    assert not m.mounted() and not mounted_at(m.target)
    for pid in (m.sshfs_pid, m.agent_pid):
        assert not running(pid), f"process {pid} still runs: {Path(f'/proc/{pid}/cmdline').read_bytes()!r}"

    async def ssh_gone():
        return not any(running(pid) for pid in ssh_pids)

    await eventually(ssh_gone, 3, f"ssh clients {list(ssh_pids)} gone")
    assert not m.private_dir.exists()


def assert_failure_left_nothing(workdir: Path, target: Path, marker: str) -> None:
    assert not mounted_at(target)
    assert list((workdir / "runtime").iterdir()) == []
    assert processes_mentioning(marker) == [] and processes_mentioning(str(workdir / "runtime")) == []
    assert find_mounts(marker) == []


# -- tests -----------------------------------------------------------------------------------
async def test_root_mount_for_a_user_with_allow_other(storage, workdir, user_dir, marker):
    user, pw, home = user_dir
    target = make_target(home, pw)
    fragments = key_fragments(storage.key_pem)
    m = await mount(storage.source, target, uid=pw.pw_uid, gid=pw.pw_gid, allow_other=True,
                    runtime_dir=workdir / "runtime", **storage.kwargs(marker))
    ssh_pids = ssh_of(m)
    try:
        assert await m.alive()
        assert find_mounts(marker) == [FoundMount(target, marker)]
        # the test user uses the mount: lists the server's file, writes one that lands there
        listing = as_user(user, "ls", "-ln", str(target)).stdout
        assert "existing.txt" in listing and f" {pw.pw_uid} {pw.pw_gid} " in listing
        assert as_user(user, "cat", str(target / "existing.txt")).stdout == "from the server\n"
        as_user(user, "sh", "-c", f"echo from the user > {target}/new.txt")
        assert (storage.dir / "new.txt").read_text() == "from the user\n"
        # the private directory: root's, 0700, the agent's socket, the pinned key, the log
        st = os.stat(m.private_dir)
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == 0
        assert sorted(p.name for p in m.private_dir.iterdir()) == ["agent.sock", "known_hosts", "sshfs.log"]
        assert (m.private_dir / "known_hosts").read_text().split()[1:] == storage.sshd.host_key.split()
        # the key: in no process's argv or environment, in no file here or under /tmp
        assert ssh_pids and all(running(p) for p in ssh_pids)
        assert leaks_in_processes(fragments) == []
        assert leaks_in_files(m.private_dir, fragments) == []
        assert leaks_in_files(Path("/tmp"), fragments) == []
        # JSON state, as a restarted hub would keep it
        assert Mount.from_state(json.loads(json.dumps(m.to_state()))).to_state() == m.to_state()
    finally:
        await m.unmount()
    await assert_nothing_left(m, ssh_pids)
    assert as_user(user, "ls", "-A", str(target)).stdout == ""
    await m.unmount()  # idempotent


async def test_wrong_key_is_refused_and_leaves_nothing(storage, workdir, marker):
    target = make_target(workdir)
    wrong_pem, _ = new_key()
    kwargs = {**storage.kwargs(marker), "key_pem": wrong_pem}
    with pytest.raises(MountError) as failure:
        await mount(storage.source, target, runtime_dir=workdir / "runtime", **kwargs)
    message = str(failure.value)
    assert "auth refused" in message and str(storage.source) in message
    assert not any(f.decode() in message for f in key_fragments(wrong_pem))
    assert_failure_left_nothing(workdir, target, marker)


async def test_wrong_pinned_host_key_is_refused_and_leaves_nothing(storage, workdir, marker, sshd_factory):
    target = make_target(workdir)
    other_host = sshd_factory()  # another machine's key, pinned for this one
    kwargs = {**storage.kwargs(marker), "known_hosts_line": other_host.known_hosts_line()}
    with pytest.raises(MountError, match="host key mismatch") as failure:
        await mount(storage.source, target, runtime_dir=workdir / "runtime", **kwargs)
    assert str(storage.source) in str(failure.value)
    assert_failure_left_nothing(workdir, target, marker)


async def test_storage_down_is_refused_within_the_timeout(storage, workdir, marker):
    target = make_target(workdir)
    storage.sshd.stop()
    started = time.monotonic()
    with pytest.raises(MountError, match="connection refused") as failure:
        await mount(storage.source, target, runtime_dir=workdir / "runtime", timeout=10, **storage.kwargs(marker))
    assert time.monotonic() - started < 10
    assert str(storage.source) in str(failure.value)
    assert_failure_left_nothing(workdir, target, marker)


async def test_killed_sshfs_is_not_alive_and_unmount_still_cleans_up(storage, workdir, marker):
    target = make_target(workdir)
    m = await mount(storage.source, target, runtime_dir=workdir / "runtime", **storage.kwargs(marker))
    ssh_pids = ssh_of(m)
    try:
        assert await m.alive()
        os.kill(m.sshfs_pid, signal.SIGKILL)
        took = await eventually(lambda: _not(m.alive()), 5, "alive() False after sshfs was killed")
        assert took < 5
        assert m.mounted()  # the dead mount is still there until someone unmounts it
    finally:
        await m.unmount()
    await assert_nothing_left(m, ssh_pids)


async def test_a_busy_mount_is_unmounted_lazily(storage, workdir, marker):
    """A process still working in the mount makes ``fusermount3 -u`` fail (busy): the mount
    leaves the namespace lazily and sshfs and the agent are stopped all the same."""
    target = make_target(workdir)
    m = await mount(storage.source, target, runtime_dir=workdir / "runtime", **storage.kwargs(marker))
    ssh_pids = ssh_of(m)
    busy = subprocess.Popen(["sleep", "60"], cwd=target)
    try:
        plain = subprocess.run(["fusermount3", "-u", str(target)], capture_output=True, text=True, timeout=10)
        assert plain.returncode != 0 and "busy" in plain.stderr
        started = time.monotonic()
        await m.unmount(timeout=5)
        assert time.monotonic() - started < 15
        await assert_nothing_left(m, ssh_pids)
    finally:
        busy.kill()
        busy.wait()


async def _not(awaitable) -> bool:
    return not await awaitable


async def test_a_hung_server_makes_alive_false_without_blocking_the_loop(storage, workdir, marker):
    target = make_target(workdir)
    m = await mount(storage.source, target, runtime_dir=workdir / "runtime", **storage.kwargs(marker))
    try:
        assert await m.alive()
        ticks, stop = [], asyncio.Event()

        async def ticker():
            while not stop.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.05)

        task = asyncio.create_task(ticker())
        with storage.sshd.paused_connection():
            started = time.monotonic()
            assert not await m.alive(timeout=2)
            assert time.monotonic() - started < 5
        stop.set()
        await task
        assert max(b - a for a, b in zip(ticks, ticks[1:])) < 0.5, "the event loop stalled"
        await eventually(m.alive, 10, "alive() again once the server answers")
    finally:
        await m.unmount()
    await assert_nothing_left(m)


async def test_find_stale_and_unmount_path_after_a_restart(storage, workdir, marker):
    """Two mounts whose Mount objects are gone (a hub restart): the reaper finds the one no
    server wants by its marker and removes it with its sshfs and agent; the other is
    unmounted from its saved JSON state."""
    runtime = workdir / "runtime"
    (workdir / "a").mkdir()
    (workdir / "b").mkdir()
    a = await mount(storage.source, make_target(workdir / "a"), runtime_dir=runtime, **storage.kwargs(f"{marker}-a"))
    try:
        b = await mount(storage.source, make_target(workdir / "b"), runtime_dir=runtime,
                        **storage.kwargs(f"{marker}-b"))
    except BaseException:
        await a.unmount()
        raise
    a_state, b_state = json.dumps(a.to_state()), json.dumps(b.to_state())
    a_ssh, b_ssh = ssh_of(a), ssh_of(b)
    del a, b
    try:
        stale = find_stale(f"{marker}-", keep={f"{marker}-b"})
        assert stale == [workdir / "a" / "storage"]
        await unmount_path(stale[0])
        a = Mount.from_state(json.loads(a_state))
        await assert_nothing_left(a, a_ssh)
        await unmount_path(stale[0])  # idempotent
        assert find_stale(f"{marker}-") == [workdir / "b" / "storage"]
    finally:
        b = Mount.from_state(json.loads(b_state))
        await b.unmount()
    await assert_nothing_left(b, b_ssh)
    assert list(runtime.iterdir()) == []
    with pytest.raises(MountError, match="not an sshfs mount"):
        await unmount_path("/proc")


async def test_mount_as_a_user_in_their_directory(storage, workdir, user_dir, marker, user_fuse):
    user, pw, home = user_dir
    target = make_target(home, pw)
    fragments = key_fragments(storage.key_pem)
    m = await mount(storage.source, target, as_user=user, runtime_dir=workdir / "runtime", **storage.kwargs(marker))
    ssh_pids = ssh_of(m)
    try:
        assert await m.alive()
        # agent, sshfs and ssh run as the user; the private directory is theirs, 0700
        for pid in (m.agent_pid, m.sshfs_pid, *ssh_pids):
            uids = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[:4]
            assert uids == [str(pw.pw_uid)] * 4
        st = os.stat(m.private_dir)
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, pw.pw_uid)
        # the files show the user's ownership; what the user writes lands on the server
        listing = as_user(user, "ls", "-ln", str(target)).stdout
        assert "existing.txt" in listing and f" {pw.pw_uid} {pw.pw_gid} " in listing
        as_user(user, "sh", "-c", f"echo mine > {target}/mine.txt")
        assert (storage.dir / "mine.txt").read_text() == "mine\n"
        assert f"user_id={pw.pw_uid}" in next(
            line for line in Path("/proc/self/mountinfo").read_text().splitlines() if f" {target} " in line)
        assert leaks_in_processes(fragments) == []
        assert leaks_in_files(Path("/tmp"), fragments) == []
    finally:
        await m.unmount()
    await assert_nothing_left(m, ssh_pids)
