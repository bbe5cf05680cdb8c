"""CloudSSHSpawner: run jupyterhub-singleuser on a remote machine over one owned SSH connection.

Per server there is exactly one SSH connection (:class:`~cloudsshspawner.tunnel.SSHTunnel`)
carrying two forwards:

* local:  hub 127.0.0.1:<local_port>  ->  machine 127.0.0.1:<notebook_port>  (proxy -> notebook)
* remote: machine 127.0.0.1:<api_port> ->  the hub's API                     (notebook -> hub)

The notebook binds 127.0.0.1 on the machine, so only sshd faces the network. Everything needed
to find the server again after a hub restart is in the spawner state (JSON): the host, the SSH
port and user, the verified host key, the three ports, the id of the launch, and the remote PID
with its start time.
"""

import asyncio
import os
import re
import secrets
import time
from urllib.parse import urlparse

import asyncssh
from jupyterhub.spawner import Spawner
from jupyterhub.utils import url_path_join
from traitlets import Bool, Float, Integer, List, TraitError, Unicode, validate

from . import remote
from .progress import ProgressEvents
from .tunnel import HostKeyError, SSHTarget, SSHTunnel, TunnelClosed

_STATE_KEYS = (
    "host", "ssh_port", "username", "host_key",
    "local_port", "notebook_port", "api_port", "launch_id", "pid", "pid_start",
)

# "--ip=X", "--ip X", "--ServerApp.ip=X", ...: what would make the notebook listen on X
_IP_ARG = re.compile(r"^--?(?:[A-Za-z_]\w*\.)*ip(?:=(?P<value>.*))?\Z", re.S)


def check_loopback_args(args) -> None:
    """Raise ValueError if ``args`` would make the notebook listen anywhere but 127.0.0.1."""
    args = list(args)
    for i, arg in enumerate(args):
        match = _IP_ARG.match(arg)
        if not match:
            continue
        value = match.group("value")
        if value is None:
            value = args[i + 1] if i + 1 < len(args) else ""
        if value.strip("'\"") != "127.0.0.1":
            raise ValueError(
                f"Spawner.args contains {arg!r}{'' if '=' in arg else ' ' + repr(value)}: with"
                " CloudSSHSpawner the notebook must listen on 127.0.0.1 only (the hub reaches it"
                " through the SSH tunnel, nothing else may). Remove that argument or set it to"
                " 127.0.0.1."
            )


def parse_host(entry: str, default_port: int) -> tuple[str, int]:
    """``"host"``, ``"host:port"`` or ``"[v6addr]:port"`` -> (host, port)."""
    entry = entry.strip()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if entry.count(":") == 1:
        host, port = entry.split(":")
        return host, int(port)
    return entry, default_port


class CloudSSHSpawner(Spawner):
    """Spawn jupyterhub-singleuser on a remote host over one managed SSH connection.

    ``Spawner.cmd``, ``Spawner.args`` and ``Spawner.environment`` are the remote command and
    environment. Secrets (the API token and the rest of the environment) travel on the SSH
    channel's stdin, never in argv, files or logs.
    """

    remote_hosts = List(
        Unicode(),
        config=True,
        help="""Machines to start the notebook on: "host", "host:port" or "[v6addr]:port".

        Tried in order; the first one that answers is used. A machine whose host key does not
        verify stops the spawn (it is not skipped silently). Entries are templated with
        {username}.
        """,
    )
    remote_port = Integer(22, config=True, help="SSH port for entries of remote_hosts that name none.")
    remote_username = Unicode(
        "{username}",
        config=True,
        help="Unix user to log in as on the machine. Templated with {username}.",
    )
    ssh_key_path = Unicode(
        config=True,
        help="""Private key the hub logs in with (OpenSSH or PEM format, no passphrase).

        Templated with {username}, so each user may have their own key. Read by the hub.
        """,
    )
    ssh_certificate_path = Unicode(
        "",
        config=True,
        help="OpenSSH certificate for ssh_key_path (optional). Templated with {username}.",
    )
    known_hosts = Unicode(
        "~/.ssh/known_hosts",
        config=True,
        help="""known_hosts file (OpenSSH format) the machines' host keys are checked against.

        Hosts on a non-standard port are looked up as "[host]:port". Ignored when host_key is set.
        """,
    )
    host_key = Unicode(
        "",
        config=True,
        help="""Pinned host public key ("ssh-ed25519 AAAA...") of the machine.

        Whoever created the machine (e.g. MultipleSpawner) passes it in. Takes precedence over
        known_hosts; any other key is refused.
        """,
    )
    trust_on_first_use = Bool(
        False,
        config=True,
        help="""Accept an unknown host key on the first connection of a spawn (TOFU).

        Off by default: an unknown key is refused. When on, the key seen at start is pinned in
        the spawner state, and every reconnect (and every reconnect after a hub restart)
        accepts only that key.
        """,
    )
    remote_python = Unicode(
        "python3",
        config=True,
        help="""Python 3 interpreter on the machine that runs the small launcher program sent
        over SSH (port choice, start, status, signals). No helper script needs installing.""",
    )
    remote_notebook_port = Integer(
        0,
        config=True,
        help="Port the notebook binds on the machine's 127.0.0.1; 0 lets the machine choose a free one.",
    )
    remote_log_path = Unicode(
        "~/.jupyterhub-cloudssh/{server_label}.log",
        config=True,
        help="""Notebook server log on the machine (created 0600 in a 0700 directory).

        Templated with {username} and {server_label} (the server name, or "default").
        The launch record (which process a launch started, 0600, no secret in it) is kept next
        to it as <path>.launch.
        """,
    )
    keepalive_interval = Float(
        10,
        config=True,
        help="""Seconds without a packet from the machine after which a keepalive is sent.

        A connection that goes silent is declared dead and re-established at most
        keepalive_interval * (keepalive_count_max + 1) seconds after the last packet.""",
    )
    keepalive_count_max = Integer(
        3, config=True, help="Unanswered keepalives after which the connection counts as dead."
    )
    connect_timeout = Float(15, config=True, help="Seconds to wait for one SSH connection attempt.")
    reconnect_max_delay = Float(
        4,
        config=True,
        help="Longest wait between reconnect attempts after the connection dropped (backoff cap).",
    )
    poll_reconnect_timeout = Float(
        10,
        config=True,
        help="""How long poll() waits for a dropped connection to come back before reporting
        the server as gone.""",
    )
    term_timeout = Float(
        10, config=True, help="Seconds stop() waits after SIGTERM before sending SIGKILL."
    )

    @validate("remote_log_path")
    def _log_path_relative_to_home(self, proposal):
        value = proposal["value"]
        if not (value.startswith("~/") or value.startswith("/")):
            raise TraitError("remote_log_path must be absolute or start with ~/")
        return value

    # -- state -----------------------------------------------------------------------------
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.remote_state: dict = {}
        self._tunnel: SSHTunnel | None = None
        self._tunnel_lock = asyncio.Lock()
        self._events = ProgressEvents()

    def load_state(self, state):
        super().load_state(state)
        self.remote_state = {k: state[k] for k in _STATE_KEYS if k in state}

    def get_state(self):
        state = super().get_state()
        state.update(self.remote_state)
        return state

    def clear_state(self):
        super().clear_state()
        self.remote_state = {}

    def template_namespace(self):
        ns = super().template_namespace()
        ns["server_label"] = self.name or "default"
        return ns

    # -- the hub's API for the notebook, through the remote forward -------------------------
    def _hub_api_destination(self) -> tuple[str, int]:
        url = urlparse(self.hub.api_url)
        host = url.hostname or "127.0.0.1"
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return host, url.port or (443 if url.scheme == "https" else 80)

    def get_env(self):
        """The hub's environment, with the hub API and activity URLs pointing at the remote
        forward on the machine's 127.0.0.1 (set ``self.ip``/``self.port`` first, see start)."""
        env = super().get_env()
        api_url = f"http://127.0.0.1:{self.remote_state['api_port']}{urlparse(self.hub.api_url).path}"
        env["JUPYTERHUB_API_URL"] = api_url
        env["JUPYTERHUB_ACTIVITY_URL"] = url_path_join(
            api_url, "users", getattr(self.user, "escaped_name", self.user.name), "activity"
        )
        return env

    # -- progress --------------------------------------------------------------------------
    def _progress(self, percent: int, message: str):
        self.log.info("%s: %s", self._log_name, message)
        self._events.add(percent, message)

    async def progress(self):
        """Yield connecting / tunnel up / starting / waiting events while the spawn runs."""
        async for event in self._events.follow():
            yield event

    # -- SSH -------------------------------------------------------------------------------
    def _target(self, host: str, port: int, host_key: str) -> SSHTarget:
        return SSHTarget(
            host=host,
            port=port,
            username=self.format_string(self.remote_username),
            key_path=self.format_string(self.ssh_key_path),
            certificate_path=self.format_string(self.ssh_certificate_path),
            known_hosts=os.path.expanduser(self.known_hosts) if self.known_hosts else "",
            host_key=host_key,
            trust_on_first_use=self.trust_on_first_use,
        )

    def _new_tunnel(self, target: SSHTarget) -> SSHTunnel:
        return SSHTunnel(
            target,
            keepalive_interval=self.keepalive_interval,
            keepalive_count_max=self.keepalive_count_max,
            connect_timeout=self.connect_timeout,
            reconnect_max_delay=self.reconnect_max_delay,
            log=self.log,
        )

    async def _connect_first_host(self) -> SSHTunnel:
        if not self.remote_hosts:
            raise RuntimeError("CloudSSHSpawner.remote_hosts is empty: no machine to start on")
        if not self.ssh_key_path:
            raise RuntimeError("CloudSSHSpawner.ssh_key_path is not set: no key to log in with")
        errors = []
        for entry in self.remote_hosts:
            host, port = parse_host(self.format_string(entry), self.remote_port)
            tunnel = self._new_tunnel(self._target(host, port, self.host_key))
            self._progress(10, f"Connecting to {tunnel.target}")
            try:
                await tunnel.connect()
                return tunnel
            except HostKeyError:
                await tunnel.close()
                raise
            except (OSError, asyncssh.Error, asyncio.TimeoutError) as e:
                await tunnel.close()
                self.log.warning("%s: cannot use %s: %s", self._log_name, tunnel.target, e)
                errors.append(f"{tunnel.target}: {e}")
        raise RuntimeError("No machine could be reached over SSH: " + "; ".join(errors))

    async def _ensure_tunnel(self) -> SSHTunnel:
        """The live tunnel; rebuilt from state (same ports, pinned key) if there is none.

        Forwards keep their ports from state: one that is taken is retried by the tunnel, never
        moved (the proxy route and the notebook's hub API URL are built from those ports).
        """
        async with self._tunnel_lock:
            if self._tunnel is not None and self._tunnel.failure is None:
                return self._tunnel
            if self._tunnel is not None:
                await self._tunnel.close()
                self._tunnel = None
            s = self.remote_state
            tunnel = self._new_tunnel(self._target(s["host"], s["ssh_port"], s["host_key"]))
            try:
                await tunnel.connect()
                if s.get("api_port"):
                    await tunnel.forward_remote(s["api_port"], *self._hub_api_destination())
                if s.get("notebook_port"):
                    await tunnel.forward_local(s.get("local_port", 0), s["notebook_port"])
            except BaseException:
                await tunnel.close()
                raise
            self.log.info("%s: SSH tunnel to %s re-established from state", self._log_name, tunnel.target)
            self._tunnel = tunnel
            return tunnel

    async def _close_tunnel(self):
        async with self._tunnel_lock:
            if self._tunnel is not None:
                await self._tunnel.close()
                self._tunnel = None

    async def _remote(self, action: str, payload: dict, timeout: float = 30) -> dict:
        """Run a launcher action on the machine over the tunnel and return its JSON answer."""
        tunnel = self._tunnel or await self._ensure_tunnel()
        result = await tunnel.run(
            remote.command(self.remote_python, action), remote.request(payload), timeout=timeout
        )
        if result.exit_status != 0:
            raise RuntimeError(
                f"remote {action} on {tunnel.target} failed (exit {result.exit_status}): "
                f"{(result.stderr or '').strip()[-800:]}"
            )
        return remote.parse(action, result.stdout)

    # -- Spawner API -----------------------------------------------------------------------
    async def start(self):
        """Connect, open both forwards, start the notebook; return its hub-side URL.

        Any failure (or cancellation by the hub's start timeout) stops what was started and
        closes the tunnel before the error propagates.
        """
        if self.internal_ssl:
            raise RuntimeError("CloudSSHSpawner does not support internal_ssl; SSH encrypts the hop")
        await self._close_tunnel()  # never two tunnels for one server
        self._events.reset()
        self.remote_state = {}
        try:
            check_loopback_args(self.get_args())
            tunnel = await self._connect_first_host()
            async with self._tunnel_lock:
                self._tunnel = tunnel
            t = tunnel.target
            self.remote_state.update(
                host=t.host, ssh_port=t.port, username=t.username, host_key=tunnel.host_key
            )
            self.remote_state["api_port"] = await tunnel.forward_remote(
                0, *self._hub_api_destination()
            )
            notebook_port = self.remote_notebook_port or (await self._remote("port", {}))["port"]
            self.remote_state["notebook_port"] = notebook_port
            self.remote_state["local_port"] = await tunnel.forward_local(0, notebook_port)
            self._progress(40, f"Tunnel up: hub 127.0.0.1:{self.remote_state['local_port']}"
                               f" <-> {t.host} 127.0.0.1:{notebook_port}")

            self.ip, self.port = "127.0.0.1", notebook_port
            argv = [self.format_string(a) for a in self.cmd] + list(self.get_args())
            self._progress(60, f"Starting {argv[0]} on {t.host}")
            # from here on a process may exist before its pid reaches us: the launch id lets
            # cleanup find it (or stop it from starting) through the launch record
            self.remote_state["launch_id"] = secrets.token_hex(8)
            launched = await self._remote(
                "launch",
                {"argv": argv, "env": self.get_env(), "log": self._log_path(),
                 "record": self._launch_record(), "launch_id": self.remote_state["launch_id"]},
            )
            self.remote_state.update(pid=launched["pid"], pid_start=launched["start"])
            self._progress(80, "Waiting for the notebook server to answer")
            return f"http://127.0.0.1:{self.remote_state['local_port']}"
        except BaseException as e:
            self.log.error("%s: start failed (%s); cleaning up", self._log_name, e)
            await asyncio.shield(self._stop_remote_and_close(now=True))
            raise
        finally:
            self._events.finish()

    def _log_path(self) -> str:
        return self.format_string(self.remote_log_path)

    def _launch_record(self) -> str:
        return self._log_path() + ".launch"

    async def get_url(self):
        if self.remote_state.get("local_port"):
            return f"http://127.0.0.1:{self.remote_state['local_port']}"
        return await super().get_url()

    async def poll(self):
        """None while the remote process is alive and reachable through the tunnel, else 1.

        After a hub restart this re-establishes the tunnel from state on the same ports. A
        forward whose port is taken does not make the server "gone" (the tunnel keeps retrying
        that port; a warning is logged). When the answer is "not running" the tunnel is closed
        here: the hub does not call stop() for a server that poll() reports gone.
        """
        if not self.remote_state.get("pid"):
            return 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.poll_reconnect_timeout
        while True:
            try:
                tunnel = await self._ensure_tunnel()
                if not await tunnel.wait_connected(max(deadline - loop.time(), 0)):
                    raise TunnelClosed(f"SSH tunnel to {tunnel.target} is down")
                answer = await self._remote(
                    "status", {"pid": self.remote_state["pid"], "start": self.remote_state.get("pid_start")},
                    timeout=self.poll_reconnect_timeout + self.connect_timeout,
                )
                break
            except (OSError, asyncssh.Error, asyncio.TimeoutError, RuntimeError, ValueError, TunnelClosed) as e:
                # A connection that dropped just now fails the status command before the
                # tunnel notices; it reconnects by itself, so ask again until the deadline.
                if loop.time() < deadline:
                    await asyncio.sleep(min(0.5, max(deadline - loop.time(), 0)))
                    continue
                error = e
            except HostKeyError as e:
                error = e
            self.log.error(
                "%s: cannot reach remote process %s on %s (%s); reporting it stopped, it may"
                " still be running there", self._log_name, self.remote_state["pid"],
                self.remote_state.get("host"), error,
            )
            await self._close_tunnel()
            return 1
        if answer["alive"]:
            if tunnel.forward_problem:
                self.log.warning("%s: running, but %s", self._log_name, tunnel.forward_problem)
            return None
        self.log.warning("%s: remote process %s has exited", self._log_name, self.remote_state["pid"])
        await self._close_tunnel()
        return 1

    async def stop(self, now=False):
        """SIGTERM the remote process group, SIGKILL after term_timeout, close the tunnel.

        Idempotent; works from state alone after a hub restart. After an interrupted launch
        (no pid in state) it finds the process through the launch record.
        """
        await self._stop_remote_and_close(now=now)

    async def _stop_remote_and_close(self, now: bool):
        pid = self.remote_state.get("pid")
        try:
            if not pid and self.remote_state.get("launch_id"):
                pid = await self._claim_launch()
            if pid:
                await self._signal_until_gone(pid)
        except (OSError, asyncssh.Error, asyncio.TimeoutError, RuntimeError, HostKeyError, TunnelClosed) as e:
            self.log.error(
                "%s: could not stop remote process %s on %s: %s; it may still be running",
                self._log_name, pid, self.remote_state.get("host"), e,
            )
        finally:
            await self._close_tunnel()
            self.remote_state = {}

    async def _claim_launch(self) -> int | None:
        """The pid a launch without an answer started, if any; else make sure it starts nothing."""
        answer = await self._remote(
            "claim", {"record": self._launch_record(), "launch_id": self.remote_state["launch_id"]}
        )
        if answer["pid"]:
            self.log.warning(
                "%s: the interrupted launch had started remote process %s; stopping it",
                self._log_name, answer["pid"],
            )
            self.remote_state.update(pid=answer["pid"], pid_start=answer["start"])
        else:
            self.log.info(
                "%s: the interrupted launch started nothing; it is barred from starting", self._log_name
            )
        return answer["pid"]

    async def _signal_until_gone(self, pid: int):
        target = {"pid": pid, "start": self.remote_state.get("pid_start")}
        for signal_name, wait in (("SIGTERM", self.term_timeout), ("SIGKILL", 5)):
            answer = await self._remote("signal", {**target, "signal": signal_name})
            if not answer["alive"]:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                if not (await self._remote("status", target))["alive"]:
                    self.log.info("%s: remote process %s stopped (%s)", self._log_name, pid, signal_name)
                    return
            if signal_name == "SIGTERM":
                self.log.warning(
                    "%s: remote process %s still running %gs after SIGTERM; sending SIGKILL",
                    self._log_name, pid, wait,
                )
        raise RuntimeError(f"process {pid} survived SIGKILL")
