"""The Docker engine the image builder (and the test suite) uses: the running one, or a
``dockerd`` this code starts.

``DockerEngine.acquire()`` uses the daemon that answers on ``/var/run/docker.sock``; when none
does, it starts ``dockerd`` (default data-root, so the image cache survives between runs) with
published ports defaulting to 127.0.0.1, and waits until the API answers.

Several users (test sessions, image builds) may use the engine at once. Each holds a shared
``flock`` on ``/run/jupyterhub-multiplespawner/dockerd.use`` while it needs the daemon; whoever
releases last stops the ``dockerd`` one of them started (recorded with its PID, start time and
log dir in ``dockerd.owner``), by that PID. The daemon does not die with the process that
started it (others may still use it): if that process is killed without releasing, the
daemon keeps running until the next user's last release. A daemon nobody here started is
never stopped.

Needs only the standard library and docker-py: the image builder runs without the test extra.
"""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import docker

SOCKET = "/var/run/docker.sock"
BASE_URL = f"unix://{SOCKET}"
STATE_DIR = Path("/run/jupyterhub-multiplespawner")
LOOPBACK = "127.0.0.1"

def _api_answers() -> bool:
    """True if a Docker daemon answers a ping on the default socket."""
    try:
        client = docker.DockerClient(base_url=BASE_URL, timeout=5)
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def proc_start_time(pid: int):
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces; fields after it are space separated
    return int(stat.rsplit(")", 1)[1].split()[19])


def stop_pid(pid: int, start_time, grace: float = 30.0, reap=None) -> None:
    """TERM, then after ``grace`` seconds KILL, the process ``pid`` if it is still the process
    that started at ``start_time`` (so a recycled PID is never signalled).

    ``reap``, if given, is the ``subprocess.Popen`` of that process (our own child), waited for
    so it leaves no zombie.
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        if proc_start_time(pid) != start_time:
            break
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if reap is not None and reap.poll() is not None:
                break
            if reap is None and proc_start_time(pid) != start_time:
                break
            time.sleep(0.1)
    if reap is not None:
        reap.wait()


class DockerEngine:
    """A client for the local Docker daemon, starting ``dockerd`` only if none answers.

    Use as a context manager or call ``acquire()`` / ``release()``. ``client`` is a
    ``docker.DockerClient`` for the default socket. ``owned`` says whether this object started
    the daemon (then ``log_path`` is its log). ``release()`` stops the daemon only if this object
    holds the last use of a daemon one of this suite's users started.

    Blocking: call it from a thread or a plain process, never on an event loop.
    """

    def __init__(self, start_timeout: float = 60.0):
        self.start_timeout = start_timeout
        self.client = None
        self.owned = False
        self.process = None
        self.log_dir = None
        self._use_fd = None

    @property
    def log_path(self):
        """The log of the dockerd this object started, or None."""
        return self.log_dir / "dockerd.log" if self.log_dir else None

    @staticmethod
    def _open_lock(name: str) -> int:
        STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        return os.open(STATE_DIR / name, os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self) -> "DockerEngine":
        """Make sure a daemon answers and register this object as one of its users.

        Raises RuntimeError (with the daemon's log) if a started dockerd does not answer within
        ``start_timeout`` seconds; it is stopped then.
        """
        start_fd = self._open_lock("dockerd.start")
        try:
            fcntl.flock(start_fd, fcntl.LOCK_EX)  # one user at a time decides who starts
            self._use_fd = self._open_lock("dockerd.use")
            fcntl.flock(self._use_fd, fcntl.LOCK_SH)
            if not _api_answers():
                self._start_dockerd()
        except BaseException:
            self.release()
            raise
        finally:
            os.close(start_fd)
        # long enough for a silent build step or a slow container stop
        self.client = docker.DockerClient(base_url=BASE_URL, timeout=600)
        return self

    def _start_dockerd(self):
        self.log_dir = Path(tempfile.mkdtemp(prefix="jupyterhub-multiplespawner-dockerd-"))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                # `-p PORT:PORT` without an address binds here, never on all interfaces
                ["dockerd", f"--host=unix://{SOCKET}", f"--ip={LOOPBACK}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # not tied to its starter's life (no PR_SET_PDEATHSIG): other users may still
                # need it when the starter exits; a starter that dies without releasing leaves it
                # to the last user, who stops it by the recorded PID and start time
                start_new_session=True,
            )
        self.owned = True
        owner = {
            "pid": self.process.pid,
            "start_time": proc_start_time(self.process.pid),
            "log_dir": str(self.log_dir),
        }
        (STATE_DIR / "dockerd.owner").write_text(json.dumps(owner))
        deadline = time.monotonic() + self.start_timeout
        while not _api_answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_tail()
                stop_pid(owner["pid"], owner["start_time"], reap=self.process)
                (STATE_DIR / "dockerd.owner").unlink(missing_ok=True)
                raise RuntimeError(
                    f"dockerd did not answer on {SOCKET} within {self.start_timeout}s "
                    f"(log {self.log_path}):\n{tail}"
                )
            time.sleep(0.2)

    def log_tail(self, lines: int = 60) -> str:
        """The end of the log of the dockerd this object started, or a note that it did not."""
        if self.log_path is None:
            return "(dockerd was already running; its log is not ours)"
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def release(self):
        """Drop this object's use; if it was the last user, stop a dockerd started here."""
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._use_fd is None:
            return
        fd, self._use_fd = self._use_fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another user still needs the daemon; the last one stops it
            self._stop_recorded_dockerd()
        finally:
            os.close(fd)

    def _stop_recorded_dockerd(self):
        owner_file = STATE_DIR / "dockerd.owner"
        try:
            owner = json.loads(owner_file.read_text())
        except (OSError, ValueError):
            return  # nobody here started the running daemon
        # ours, or started by an earlier user that has finished: the same PID with the same
        # start time is still that process
        ours = self.process if self.process is not None and self.process.pid == owner["pid"] else None
        stop_pid(owner["pid"], owner["start_time"], reap=ours)
        owner_file.unlink(missing_ok=True)
        shutil.rmtree(owner.get("log_dir") or "/nonexistent", ignore_errors=True)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
