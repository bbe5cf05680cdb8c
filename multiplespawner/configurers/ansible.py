"""Configure machines with the suite's Ansible playbooks, through ansible-runner.

Each :meth:`AnsibleConfigurer.configure` call:

1. hashes what decides the outcome (machine address, admin account and pinned host key, every
   file of the playbook directory, the variables, the wheel directory's listing, the roles it
   skips) and returns at once if that equals ``previous_hash``;
   a machine whose image declares exactly the notebook environment this run would install
   (:attr:`Machine.prepared`, compared fact by fact in :mod:`.prepared`) has the
   ``notebook_env`` role skipped (``--skip-tags notebook_env``): only the personalisation runs
   (notebook user and per-server key, sshd settings); any difference runs the whole playbook;
2. makes a private run directory (0700) holding an inventory for the one host, a known_hosts
   file holding only the pinned host key, an empty ansible.cfg and, if ``wheel_dir`` is set, a
   tar of the wheels for the machine;
3. runs ``ansible-playbook`` through ``ansible_runner.run`` in a bounded thread pool (never on
   the event loop), with SSH set to use only the given login key (no agent, no ``~/.ssh/config``)
   and ``StrictHostKeyChecking=yes``; each task result is passed to the progress callback as
   ``TASK [<name>] <ok|changed|skipped|failed|unreachable>``;
4. on timeout or cancellation kills ansible-playbook and the workers it forked (they run in
   sessions of their own), then, whatever happened, stops the SSH control master Ansible left
   and removes the run directory; when the hub's process exits with runs still going (a hub
   stopped while spawns configure machines), the exit stops them too, so it does not wait for
   the playbooks to end (:func:`_stop_running_playbooks`);
5. raises :class:`ConfigurerError` naming the failed task, the host and Ansible's message.

The variables reach ``ansible-playbook`` as a vars file in the private run directory (0600),
never on its command line (other users can read every process's argv), and every string in
them that could start a Jinja tag is ``!unsafe``: a user or server name substituted into a template's options is data
for the playbook, and Ansible never evaluates ``{{ ... }}`` or ``{% ... %}`` found in it (that
would run code on the hub host).

The hub's environment is not passed on to Ansible except for a short allowlist (PATH, HOME,
locale, TLS bundles), so tokens in the hub's environment never reach a playbook.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import yaml
from traitlets import Bool, Dict, Float, Integer, List, Unicode, default

from ..shared_files import shared_path
from .base import ConfigureResult, Configurer, ConfigurerError, report
from .prepared import NOTEBOOK_ENV_ROLE, notebook_env_differences, role_defaults
from .processes import kill_process_tree, process_start_time

class _RunningPlaybook:
    """One ansible-playbook run in the pool: what stops it from any thread."""

    def __init__(self):
        self.cancelled = threading.Event()  # the runner's cancel_callback
        self.pid: int | None = None
        self.started: str | None = None  # its start time, so that a reused PID is never hit

    def stop(self) -> None:
        """Kill ansible-playbook's process tree (if known) and tell the runner to end (blocking)."""
        if self.pid is not None and self.started is not None:
            kill_process_tree(self.pid, self.started)
        self.cancelled.set()


_RUNNING: set[_RunningPlaybook] = set()
_RUNNING_LOCK = threading.Lock()


def _forget(run: _RunningPlaybook) -> None:
    with _RUNNING_LOCK:
        _RUNNING.discard(run)


def _stop_running_playbooks() -> None:
    """At the interpreter's exit: stop every run still going.

    The exit joins the pool's threads, and a thread running a playbook would otherwise hold the
    hub's process until the playbook ended (a minute or more for a machine); stopped, the
    runner notices at its next check (every few seconds) and the thread ends.
    """
    with _RUNNING_LOCK:
        runs = list(_RUNNING)
    for run in runs:
        with contextlib.suppress(Exception):
            run.stop()


# concurrent.futures joins its worker threads in a threading exit hook, which runs before atexit
# handlers; those hooks run last-registered first, and concurrent.futures registered its own
# when it was imported above, so this one runs before the join
threading._register_atexit(_stop_running_playbooks)

#: environment variables of the hub passed on to ansible-playbook (others are blanked)
ENV_ALLOWLIST = {"PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR"}

#: runner event -> the word shown after the task name
EVENT_STATUS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}


def default_notebook_packages() -> list[str]:
    """jupyterhub pinned to the hub's own version, and JupyterLab (the hub's version if it has one)."""
    packages = [f"jupyterhub=={version('jupyterhub')}"]
    try:
        packages.append(f"jupyterlab=={version('jupyterlab')}")
    except PackageNotFoundError:
        packages.append("jupyterlab")
    return packages


def event_message(event: dict) -> str | None:
    """The progress text for one ansible-runner event, or None if it is not a task result."""
    status = EVENT_STATUS.get(event.get("event", ""))
    if status is None:
        return None
    data = event.get("event_data", {})
    if status == "ok" and data.get("res", {}).get("changed"):
        status = "changed"
    if status == "failed" and data.get("ignore_errors"):
        status = "failed (ignored)"
    return f"TASK [{data.get('task', '?')}] {status}"


def failure_message(event: dict, limit: int = 600) -> str:
    """Ansible's own explanation of a failed or unreachable task, shortened to ``limit``."""
    res = event.get("event_data", {}).get("res", {}) or {}
    parts = [str(res.get("msg", "")).strip()]
    for key in ("stderr", "module_stderr", "stdout"):
        text = str(res.get(key, "") or "").strip()
        if text and text not in parts[0]:
            parts.append(text[-limit:])
            break
    text = ": ".join(p for p in parts if p) or "no message"
    if "Host key verification failed" in text:
        return "the machine did not present the host key pinned at its creation (Host key verification failed)"
    if len(text) > limit:  # keep both ends: Ansible's summary first, the actual error last
        head = limit // 3
        text = text[:head] + " ... " + text[-(limit - head - 5):]
    return text


class _Unsafe(str):
    """A string Ansible must take literally (written with the ``!unsafe`` tag)."""


class _VarsDumper(yaml.SafeDumper):
    """Writes :class:`_Unsafe` strings as ``!unsafe``; everything else as safe YAML."""


_VarsDumper.add_representer(_Unsafe, lambda dumper, value: dumper.represent_scalar("!unsafe", str(value)))


#: what Jinja (as Ansible configures it) starts a tag with: ``{{``, ``{%``, ``{#``
_JINJA_START = re.compile(r"\{[{%#]")


def _tag_unsafe(value):
    if isinstance(value, str):
        # Only strings that could start a Jinja tag get ``!unsafe``: Ansible resolves the type of
        # an ``!unsafe`` scalar as if it were plain ('' -> null, '1001' -> 1001, 'true' -> True),
        # and none of those holds a ``{``.
        return _Unsafe(value) if _JINJA_START.search(value) else value
    if isinstance(value, dict):
        return {str(k): _tag_unsafe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_tag_unsafe(v) for v in value]
    return value


def write_vars_file(path: Path, variables: dict) -> None:
    """Write ``variables`` to ``path`` (created 0600) as an Ansible vars file for ``-e @path``
    in which every string, at any depth, is data: those that could start a Jinja tag are
    ``!unsafe`` (Ansible uses them as they are and never templates them), the others are
    quoted strings, so every value keeps its type."""
    text = yaml.dump(_tag_unsafe(variables), Dumper=_VarsDumper, default_flow_style=False)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


async def _next_event(events: asyncio.Queue, timeout: float):
    """``events.get()`` within ``timeout`` (else ``asyncio.TimeoutError``).

    Not ``asyncio.wait_for``: before Python 3.12 it can return the item and drop a cancellation
    that arrives as the item does (CPython gh-86296), and a cancelled spawn must stop Ansible.
    """
    getter = asyncio.ensure_future(events.get())
    try:
        done, _ = await asyncio.wait({getter}, timeout=timeout)
    finally:
        if not getter.done():
            getter.cancel()
    if not done:
        raise asyncio.TimeoutError
    return getter.result()


def host_key_algorithm(public_key_line: str) -> str:
    """The key type of an OpenSSH public key line ("ssh-ed25519 AAAA... comment")."""
    return public_key_line.split()[0]


def build_inventory(machine, key_file: Path, known_hosts_file: Path, python: str) -> dict:
    """An ansible-runner inventory for exactly one host: the given machine.

    SSH reads no user config (``-F /dev/null``), offers only ``key_file`` (no agent), and
    accepts only the pinned host key in ``known_hosts_file``.
    """
    ssh_args = [
        "-F /dev/null",
        f"-o UserKnownHostsFile={known_hosts_file}",
        "-o GlobalKnownHostsFile=/dev/null",
        "-o StrictHostKeyChecking=yes",
        f"-o HostKeyAlgorithms={host_key_algorithm(machine.host_public_key)}",
        "-o IdentitiesOnly=yes",
        "-o IdentityAgent=none",
        "-o PasswordAuthentication=no",
        "-o KbdInteractiveAuthentication=no",
        "-o ServerAliveInterval=15",
    ]
    alias = re.sub(r"[^A-Za-z0-9_.-]", "-", str(machine.id))[:63] or "machine"
    return {
        "all": {
            "hosts": {
                alias: {
                    "ansible_connection": "ssh",
                    "ansible_host": machine.host,
                    "ansible_port": int(machine.port),
                    "ansible_user": machine.ssh_user,
                    "ansible_ssh_private_key_file": str(key_file),
                    "ansible_ssh_common_args": " ".join(ssh_args),
                    "ansible_python_interpreter": python,
                }
            }
        }
    }


def tree_digest(root: Path) -> str:
    """sha256 over the files below ``root`` that Ansible may read (relative path and content).

    Documentation (``*.md``) and caches (``__pycache__``, ``.ansible``) are left out, so editing a
    README does not make every machine be configured again.
    """
    h = hashlib.sha256()
    files = (
        p for p in root.rglob("*")
        if p.is_file() and p.suffix != ".md" and not {"__pycache__", ".ansible"} & set(p.parts)
    )
    for path in sorted(files):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


#: The file in a wheel directory naming the exact CPython (``X.Y.Z``) its wheels were resolved
#: for; ``python -m images`` writes it, operators write it after ``pip download``.
WHEEL_PYTHON_FILE = "python-version"


def wheel_python(wheel_dir: Path) -> str:
    """The exact Python version recorded in ``wheel_dir``; ConfigurerError if there is none.

    Wheels resolved for one patch release can fail on another (a dependency may require
    ``>= 3.11.5`` and the machine have 3.11.2), so the playbook compares this with the machine's
    Python before it installs anything.
    """
    how = (
        f"download the wheels for the machines' exact Python (`pip download -d {wheel_dir} "
        "--only-binary=:all: --python-version X.Y.Z ...`, X.Y.Z from `python3 --version` on a "
        f"machine) and write X.Y.Z into {wheel_dir / WHEEL_PYTHON_FILE}"
    )
    try:
        recorded = (wheel_dir / WHEEL_PYTHON_FILE).read_text().strip()
    except FileNotFoundError:
        raise ConfigurerError(f"wheel directory {wheel_dir} does not say which Python its wheels are for: {how}") from None
    if not re.fullmatch(r"\d+\.\d+\.\d+", recorded):
        raise ConfigurerError(f"{wheel_dir / WHEEL_PYTHON_FILE} holds {recorded[:40]!r}, not a version X.Y.Z: {how}")
    return recorded


def wheel_listing(wheel_dir: Path) -> list[list]:
    """The wheels in ``wheel_dir`` as [name, size] pairs (what the hash needs to see)."""
    return sorted([p.name, p.stat().st_size] for p in wheel_dir.glob("*.whl"))


def config_hash(machine, playbooks_digest: str, variables: dict, wheels: list | None,
                skipped_roles: list | None = None) -> str:
    """The hash of everything that decides what a configure run does to a machine."""
    payload = {
        "host": machine.host,
        "port": int(machine.port),
        "ssh_user": machine.ssh_user,
        "host_public_key": machine.host_public_key,
        "playbooks": playbooks_digest,
        "variables": variables,
        "wheels": wheels,
    }
    if skipped_roles:  # absent when nothing is skipped: the hashes pool hosts keep stay valid
        payload["skipped_roles"] = sorted(skipped_roles)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class AnsibleConfigurer(Configurer):
    """Runs the suite's playbooks (or your own) against a machine with ansible-runner."""

    playbook_dir = Unicode(
        "",
        config=True,
        help="""Directory holding the playbook and its roles. Empty: the playbooks shipped with
        the suite (`share/jupyterhub-multiplespawner/playbooks`).""",
    )

    playbook = Unicode(
        "notebook-machine.yml",
        config=True,
        help="Playbook file (relative to `playbook_dir`) that prepares a machine.",
    )

    variables = Dict(
        config=True,
        help="""Ansible variables for every machine (see docs/configuring-machines.md), e.g.
        {"notebook_env_path": "/opt/notebook"}. Variables the spawner passes for one server
        (user name, uid, template options) take precedence; the per-server authorized key
        always comes from the server's credentials.""",
    )

    notebook_packages = List(
        Unicode(),
        config=True,
        help="""pip requirements of the notebook environment on the machine. Default:
        jupyterhub at the hub's exact version and JupyterLab (at the hub's version if installed).
        Exact pins let a second run skip the wheel copy.""",
    )

    @default("notebook_packages")
    def _default_notebook_packages(self):
        return default_notebook_packages()

    wheel_dir = Unicode(
        "",
        config=True,
        help="""Directory of wheels on the hub that the machine installs from, offline, with
        --no-index; machines need no package index then. Resolve them for the machines' exact
        Python (`pip download -d DIR --only-binary=:all: --python-version 3.11.2
        jupyterhub==<hub version> jupyterlab`) and write that version into `DIR/python-version`:
        a machine whose `python3` differs is refused before anything is installed.
        Empty: the machine uses `index_url`.""",
    )

    index_url = Unicode(
        "",
        config=True,
        help="Package index the machine installs from when `wheel_dir` is empty (empty: PyPI).",
    )

    use_prepared_image = Bool(
        True,
        config=True,
        help="""Skip the notebook_env role on a machine whose image declares exactly the notebook
        environment this run would install (same path, same Python, every requirement in the
        image's recorded `pip freeze`; see docs/configuring-machines.md). Only the
        personalisation (notebook user, per-server key, sshd settings) runs then. False: every
        machine is configured in full, whatever its image says.""",
    )

    remote_python = Unicode(
        "/usr/bin/python3",
        config=True,
        help="Python interpreter on the machine that runs Ansible's modules.",
    )

    timeout = Float(
        900,
        config=True,
        help="Seconds one configure run may take before it is stopped and reported as failed.",
    )

    max_parallel_runs = Integer(
        4,
        config=True,
        help="""How many configure runs may go on at once in this hub (each is an
        ansible-playbook process); further spawns wait for a free slot.""",
    )

    work_dir = Unicode(
        "",
        config=True,
        help="""Where private run directories are made (0700, removed after each run).
        Empty: the system's temporary directory.""",
    )

    _pools: dict = {}

    def _pool(self) -> ThreadPoolExecutor:
        size = self.max_parallel_runs
        if size not in self._pools:
            self._pools[size] = ThreadPoolExecutor(size, thread_name_prefix="ansible-configure")
        return self._pools[size]

    def _playbook_root(self) -> Path:
        return Path(self.playbook_dir) if self.playbook_dir else shared_path("playbooks")

    def playbook_variables(self, credentials, variables: dict) -> dict:
        """The extra variables one run gets: defaults, then the trait ``variables``, then the
        server's ``variables``.

        ``notebook_user_authorized_key`` is never taken from the trait (the catalogue): it is the
        server's ``variables`` value if the caller gives one (the spawner does: the per-server
        key, or "" when the notebook user logs in with a CA certificate), else the public half of
        the login ``credentials``.
        """
        merged = {"notebook_env_packages": list(self.notebook_packages)}
        if self.index_url:
            merged["notebook_env_index_url"] = self.index_url
        merged.update({k: v for k, v in self.variables.items() if k != "notebook_user_authorized_key"})
        merged["notebook_user_authorized_key"] = credentials.client_public_key
        merged.update(variables)
        return merged

    async def configure(self, machine, credentials, variables, progress_callback=None, previous_hash=None):
        """Run the playbook against ``machine``; see the module docstring for the steps."""
        root = self._playbook_root()
        playbook_file = root / self.playbook
        extravars = self.playbook_variables(credentials, variables)
        wheel_dir = Path(self.wheel_dir) if self.wheel_dir else None

        prepared = getattr(machine, "prepared", None) or {}
        where = f"{machine.host}:{machine.port}"

        def _inputs():
            if not playbook_file.is_file():
                raise ConfigurerError(f"playbook {playbook_file} does not exist")
            wheels = None
            if wheel_dir is not None:
                if not wheel_dir.is_dir():
                    raise ConfigurerError(f"wheel directory {wheel_dir} does not exist")
                extravars["notebook_env_wheel_python"] = wheel_python(wheel_dir)
                wheels = wheel_listing(wheel_dir)
            differences = None
            if prepared and self.use_prepared_image:
                wanted = {**role_defaults(root, NOTEBOOK_ENV_ROLE), **extravars}
                differences = notebook_env_differences(prepared, wanted)
            return tree_digest(root), wheels, differences

        playbooks_digest, wheels, differences = await asyncio.to_thread(_inputs)
        skip_roles = [NOTEBOOK_ENV_ROLE] if differences == [] else []
        if differences:
            self.log.info("Machine %s: its image's notebook environment is not this run's (%s); "
                          "configuring it in full", where, "; ".join(differences))
        digest = config_hash(machine, playbooks_digest, extravars, wheels, skip_roles)
        if previous_hash and previous_hash == digest:
            self.log.info("Machine %s is already configured (hash %s); not running Ansible", where, digest[:12])
            await report(progress_callback, "already configured: nothing to do")
            return ConfigureResult(config_hash=digest, skipped=True)

        run_dir = Path(tempfile.mkdtemp(prefix="ansible-", dir=self.work_dir or None))
        # SSH control sockets need a short path (a Unix socket path has ~100 bytes at most)
        control_dir = run_dir  # until its own directory exists
        try:
            control_dir = Path(tempfile.mkdtemp(prefix="ansible-cp-"))
            # the wheels are for the notebook_env role: no archive when it is skipped
            await asyncio.to_thread(self._prepare_run_dir, run_dir, machine, credentials,
                                    None if skip_roles else wheel_dir, extravars)
            if skip_roles:
                self.log.info("Configuring %s with %s; the image is prepared with this notebook "
                              "environment: skipping %s", where, playbook_file, ", ".join(skip_roles))
                await report(progress_callback, "the image is prepared with this notebook environment: "
                                                "only the notebook user and sshd are configured")
            else:
                self.log.info("Configuring %s with %s", where, playbook_file)
            stats = await self._run(
                run_dir, control_dir, root, playbook_file, machine, credentials, progress_callback,
                skip_roles,
            )
        finally:
            await self._stop_control_masters(control_dir)
            await asyncio.to_thread(shutil.rmtree, run_dir, True)
            await asyncio.to_thread(shutil.rmtree, control_dir, True)
        changed = sum(stats.get("changed", {}).values())
        self.log.info("Configured %s: %s changed", where, changed)
        return ConfigureResult(
            config_hash=digest,
            changed=changed,
            skipped_roles=skip_roles,
            stats={k: sum(v.values()) for k, v in stats.items() if isinstance(v, dict)},
        )

    def _prepare_run_dir(self, run_dir: Path, machine, credentials, wheel_dir, extravars) -> None:
        """Known hosts, empty ansible.cfg and wheel archive in the private run directory."""
        os.chmod(run_dir, 0o700)
        (run_dir / "known_hosts").write_text(credentials.known_hosts_line(machine.host, machine.port))
        (run_dir / "ansible.cfg").write_text("")
        for sub in ("home", "tmp"):
            (run_dir / sub).mkdir(mode=0o700)
        if wheel_dir is not None:
            archive = run_dir / "wheels.tar"
            with tarfile.open(archive, "w") as tar:
                for wheel in sorted(wheel_dir.glob("*.whl")):
                    tar.add(wheel, arcname=wheel.name)
            extravars["notebook_env_wheel_archive"] = str(archive)
        write_vars_file(run_dir / "vars.yml", extravars)

    def _environment(self, run_dir: Path, control_dir: Path, root: Path) -> dict:
        env = {k: "" for k in os.environ if k not in ENV_ALLOWLIST}
        bin_dir = str(Path(sys.executable).parent)
        env.update(
            PATH=os.pathsep.join([bin_dir, os.environ.get("PATH", os.defpath)]),
            LANG="C.UTF-8",
            LC_ALL="C.UTF-8",
            ANSIBLE_CONFIG=str(run_dir / "ansible.cfg"),
            ANSIBLE_HOME=str(run_dir / "home"),
            ANSIBLE_LOCAL_TEMP=str(run_dir / "tmp"),
            ANSIBLE_SSH_CONTROL_PATH_DIR=str(control_dir),
            # Ansible's default minus -C: compressing wheels (already zip files) only costs CPU
            ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=60s",
            ANSIBLE_ROLES_PATH=str(root / "roles"),
            ANSIBLE_HOST_KEY_CHECKING="True",
            ANSIBLE_PIPELINING="True",
            ANSIBLE_TIMEOUT="30",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_SSH_RETRIES="2",
        )
        return env

    async def _run(self, run_dir, control_dir, root, playbook_file, machine, credentials, progress_callback,
                   skip_tags=()) -> dict:
        """Run ansible-playbook in the thread pool, relaying task events; return its stats.

        ``skip_tags``: tags whose tasks do not run (``--skip-tags``).

        On timeout or cancellation the run is stopped: the runner kills ansible-playbook's
        process group, and the worker processes Ansible forks into sessions of their own (which
        that does not reach) are killed from a snapshot of ansible-playbook's process tree.
        """
        import ansible_runner

        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        playing = _RunningPlaybook()
        where = f"{machine.host}:{machine.port}"

        def on_event(event):  # called in the runner's thread
            loop.call_soon_threadsafe(events.put_nowait, event)
            return True

        def run():
            try:
                return ansible_runner.run(
                    private_data_dir=str(run_dir),
                    project_dir=str(root),
                    playbook=str(playbook_file),
                    inventory=build_inventory(
                        machine, credentials.client_key_path, run_dir / "known_hosts", self.remote_python
                    ),
                    cmdline=f"-e @{run_dir / 'vars.yml'}"
                            + (f" --skip-tags {','.join(skip_tags)}" if skip_tags else ""),
                    envvars=self._environment(run_dir, control_dir, root),
                    quiet=True,
                    suppress_env_files=True,
                    event_handler=on_event,
                    cancel_callback=playing.cancelled.is_set,
                )
            finally:
                loop.call_soon_threadsafe(events.put_nowait, None)

        async def stop():
            # the runner ends the run (and kills the process group) at its next check
            await asyncio.to_thread(playing.stop)
            await asyncio.gather(asyncio.shield(job), return_exceptions=True)

        with _RUNNING_LOCK:
            _RUNNING.add(playing)
        job = loop.run_in_executor(self._pool(), run)
        job.add_done_callback(lambda _: _forget(playing))
        deadline = loop.time() + self.timeout
        failure = None
        stats: dict = {}
        last_task = None
        try:
            while (event := await _next_event(events, max(0, deadline - loop.time()))) is not None:
                if playing.pid is None and event.get("pid"):
                    playing.started = process_start_time(int(event["pid"]))
                    playing.pid = int(event["pid"])
                kind = event.get("event", "")
                if kind == "playbook_on_stats":
                    stats = {
                        k: v for k, v in event.get("event_data", {}).items()
                        if k in ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored")
                    }
                message = event_message(event)
                if message is None:
                    continue
                last_task = event.get("event_data", {}).get("task")
                await report(progress_callback, message)
                ignored = event.get("event_data", {}).get("ignore_errors")
                if kind in ("runner_on_failed", "runner_on_unreachable") and not ignored and failure is None:
                    failure = event
            runner = await job
        except asyncio.TimeoutError:
            await stop()
            raise ConfigurerError(
                f"configuring {where} took longer than {self.timeout:.0f}s (last task: {last_task or 'none'})"
            ) from None
        except asyncio.CancelledError:
            await stop()
            raise
        except Exception as e:  # ansible-runner could not start the run
            raise ConfigurerError(f"could not run ansible-playbook for {where}: {e}") from e
        if runner.status == "successful" and runner.rc == 0:
            return stats
        if failure is not None:
            task = failure.get("event_data", {}).get("task", "?")
            raise ConfigurerError(
                f"configuring {where} failed at task '{task}': {failure_message(failure)}"
            )
        tail = ""
        try:
            tail = "\n".join(runner.stdout.read().strip().splitlines()[-5:])
        except Exception:  # no stdout file: the process did not start
            pass
        raise ConfigurerError(
            f"configuring {where} failed ({runner.status}, exit code {runner.rc}): {tail or 'no output'}"
        )

    async def _stop_control_masters(self, control_dir: Path) -> None:
        """Tell any SSH control master that Ansible left running to exit (bounded wait)."""
        for sock in control_dir.glob("*"):
            if not sock.is_socket():
                continue
            try:
                proc = await asyncio.create_subprocess_exec(
                    "ssh", "-F", "/dev/null", "-o", f"ControlPath={sock}", "-O", "exit", "machine",
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )
            except OSError as e:
                self.log.warning("Could not stop the SSH control master %s: %s", sock, e)
                continue
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
