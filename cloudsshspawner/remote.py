"""What runs on the machine: a small Python program sent over the SSH channel each time.

Nothing has to be installed on the machine but sshd and a Python 3 interpreter. The program's
source travels in argv (it holds no secret); its input travels as JSON on the channel's stdin, so
the API token and the rest of the environment never appear in argv, in a file or in a log.

Actions (``python3 -c SOURCE ACTION`` with a JSON object on stdin, one JSON object on stdout):

``port``    bind 127.0.0.1:0, report the port the kernel chose, release it.
``launch``  start ``argv`` with ``env`` added to the login environment, in its own session,
            stdin from /dev/null, stdout/stderr appended to ``log`` (created 0600 in a 0700
            directory), detached so it outlives the SSH connection. Reports ``pid`` and its
            start time (``start``; from /proc, or null where there is no /proc). Before it
            reports, it writes ``{launch_id, pid, start}`` to the launch record ``record``
            (0600, no secret in it), so a launch whose answer never reached the hub can be found.
``claim``   for a launch whose answer was lost (start cancelled, connection dropped): report
            ``pid``/``start`` if the record shows ``launch_id`` started a process; otherwise
            mark ``launch_id`` cancelled so that a launch still on its way starts nothing.
``status``  is ``pid`` alive and still the process that was launched (same start time)?
``signal``  send ``signal`` to the process group of ``pid`` if it is still that process.

``launch`` and ``claim`` hold an exclusive ``flock`` on the record while they run, so one of
them always sees what the other did.
"""

import json
import shlex

_SOURCE = r'''
import fcntl, json, os, signal, socket, subprocess, sys

def start_time(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return "gone" if fields[0] in "ZX" else fields[19]
    except FileNotFoundError:
        return None if not os.path.isdir("/proc") else "gone"

def same(pid, start):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = start_time(pid)
    return now != "gone" and (start is None or now is None or now == start)

def private(path):
    path = os.path.expanduser(path)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return fd

def locked_record(path):
    fd = private(path)
    fcntl.flock(fd, fcntl.LOCK_EX)  # released when this program exits
    f = os.fdopen(fd, "r+")
    try:
        return f, json.loads(f.read() or "{}")
    except ValueError:
        return f, {}

def save(f, record):
    f.seek(0)
    f.truncate()
    f.write(json.dumps(record))
    f.flush()

req = json.loads(sys.stdin.read() or "{}")
action = sys.argv[1]
if action == "port":
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    out = {"port": s.getsockname()[1]}
    s.close()
elif action == "launch":
    record, seen = locked_record(req["record"])
    if seen.get("cancelled") == req["launch_id"]:
        sys.exit("launch %s was cancelled before it started" % req["launch_id"])
    fd = private(req["log"])
    env = dict(os.environ)
    env.update(req["env"])
    cwd = os.path.expanduser(req.get("cwd") or "~")
    p = subprocess.Popen(req["argv"], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                         stdout=fd, stderr=fd, start_new_session=True, close_fds=True)
    out = {"pid": p.pid, "start": start_time(p.pid)}
    save(record, {"launch_id": req["launch_id"], **out})
elif action == "claim":
    record, seen = locked_record(req["record"])
    if seen.get("launch_id") == req["launch_id"]:
        out = {"pid": seen["pid"], "start": seen["start"]}
    else:
        save(record, {"cancelled": req["launch_id"]})
        out = {"pid": None}
elif action == "status":
    out = {"alive": same(req["pid"], req.get("start"))}
elif action == "signal":
    alive = same(req["pid"], req.get("start"))
    if alive:
        try:
            os.killpg(req["pid"], getattr(signal, req["signal"]))
        except ProcessLookupError:
            alive = False
    out = {"alive": alive}
else:
    sys.exit("unknown action %r" % action)
print(json.dumps(out))
'''


def command(python: str, action: str) -> str:
    """The shell command line that runs ``action`` with the interpreter ``python``.

    ``python`` is split like a shell word list (e.g. ``"/usr/bin/env python3"``) and quoted, so
    operators can name any interpreter path without it being interpreted by the login shell.
    """
    return " ".join(shlex.quote(w) for w in [*shlex.split(python), "-c", _SOURCE, action])


def request(payload: dict) -> str:
    """Serialise the stdin payload of an action."""
    return json.dumps(payload)


def parse(action: str, stdout: str) -> dict:
    """Parse an action's stdout (its last line is the JSON answer)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"remote {action!r} printed nothing")
    return json.loads(lines[-1])
