"""One owned SSH connection to a machine, carrying port forwards that outlive connection drops.

:class:`SSHTunnel` is the only place that talks SSH. It is async all the way (asyncssh: no thread
per connection, nothing blocking on the event loop; files are read in a worker thread), verifies
the host key on every (re)connect, keeps the connection alive with keepalives, and when the
connection drops reconnects with exponential backoff and re-creates every forward on the same
ports. It knows nothing of JupyterHub.
"""

import asyncio
import logging
import os
import socket
import weakref
from dataclasses import dataclass, field

import asyncssh

from .metrics import TUNNEL_RECONNECTS


# what opening a listener raises when its port is taken (hub side: OSError; machine side: sshd
# refuses, which asyncssh reports as ChannelListenError, not an asyncssh.Error)
_BIND_ERRORS = (OSError, asyncssh.Error, asyncssh.ChannelListenError)


#: new forwarded connections that may open their SSH channel in one pass of the event loop
#: (see :class:`_ChannelPacer`)
CHANNELS_PER_PASS = 8


class _ChannelPacer:
    """Spreads a burst of new forwarded connections over passes of the event loop.

    When many clients connect through many tunnels in the same instant (a class's browsers
    reconnecting, a proxy retrying), their accept callbacks all become ready in one pass of the
    event loop, and each then opens an SSH channel and handles the replies, pass after pass:
    the loop runs them back to back and nothing else (another user's request, a keepalive) gets
    a turn until the whole burst is through. :meth:`admit` (the local forwards'
    ``accept_handler``) lets at most ``per_pass`` connections proceed per pass; the others
    wait for the next pass, so other callbacks run in between. One pacer per event loop, shared
    by every tunnel of that loop; a connection is never refused.
    """

    def __init__(self, per_pass: int):
        self.per_pass = per_pass
        self._admitted = 0
        self._next_pass: asyncio.Future | None = None

    def _new_pass(self) -> None:
        self._admitted = 0
        if self._next_pass is not None:
            self._next_pass.set_result(None)
            self._next_pass = None

    async def admit(self, *_client) -> bool:
        loop = asyncio.get_running_loop()
        while self._admitted >= self.per_pass:
            if self._next_pass is None:
                self._next_pass = loop.create_future()
            await asyncio.shield(self._next_pass)
        if self._admitted == 0:
            loop.call_soon(self._new_pass)  # runs in the next pass, after what is ready now
        self._admitted += 1
        return True


_PACERS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ChannelPacer]" = weakref.WeakKeyDictionary()


def _channel_pacer() -> _ChannelPacer:
    """The pacer of the running event loop (made at first use)."""
    loop = asyncio.get_running_loop()
    pacer = _PACERS.get(loop)
    if pacer is None:
        pacer = _PACERS[loop] = _ChannelPacer(CHANNELS_PER_PASS)
    return pacer


class HostKeyError(Exception):
    """The machine's host key is not the one we trust; we refuse to talk to it."""


class TunnelClosed(Exception):
    """The tunnel was closed, or gave up reconnecting (e.g. the host key changed)."""


@dataclass
class SSHTarget:
    """Where and as whom to log in, and which host key to trust.

    Host-key trust, in order: ``host_key`` (a pinned OpenSSH public key line) if set; else the
    ``known_hosts`` file. A key neither of them trusts is refused, with one exception: when
    ``trust_on_first_use`` is true, no key is pinned and ``known_hosts`` has *no entry at all*
    for the machine, the key offered is accepted and reported in :attr:`SSHTunnel.host_key`
    for the caller to pin. A key that differs from a known_hosts entry is a changed key and is
    refused whatever ``trust_on_first_use`` says.
    """

    host: str
    port: int
    username: str
    key_path: str
    certificate_path: str = ""
    known_hosts: str = ""
    host_key: str = ""
    trust_on_first_use: bool = False

    def __str__(self):
        return f"{self.username}@{self.host}:{self.port}"


@dataclass
class _Forward:
    kind: str  # "local" (listen here, connect there) or "remote" (listen there, connect here)
    listen_port: int
    dest_host: str
    dest_port: int
    listener: object = field(default=None, repr=False)
    problem: str = ""  # why the last attempt to bind it failed


class _HostKeyRecorder(asyncssh.SSHClient):
    """Sees every host key asyncssh could not match against the trusted keys.

    asyncssh asks it about *any* untrusted key, including one that conflicts with a known_hosts
    entry. It accepts a key only for trust-on-first-use (``accept_unknown``) and only when the
    trusted keys have no entry for the machine; :attr:`changed` records a conflicting key.
    """

    def __init__(self, known_hosts, accept_unknown: bool):
        self.known_hosts = known_hosts
        self.accept_unknown = accept_unknown
        self.offered = None
        self.changed = False

    def validate_host_public_key(self, host, addr, port, key):
        self.offered = key
        listed = asyncssh.match_known_hosts(self.known_hosts, host, addr, None if port == 22 else port)
        self.changed = any(listed)
        return self.accept_unknown and not self.changed


def _set_nodelay(conn) -> None:
    sock = conn.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class SSHTunnel:
    """A supervised SSH connection with local/remote forwards bound to 127.0.0.1.

    Contract:

    * :meth:`connect` opens the connection or raises :class:`HostKeyError` (untrusted key),
      ``OSError``/``asyncssh.Error`` (unreachable, authentication failed). After a successful
      connect, :attr:`host_key` is the verified key as an OpenSSH public key line.
    * :meth:`forward_local` / :meth:`forward_remote` add a forward and return its listening
      port. Port ``0`` picks a free one and raises if the forward cannot be opened. A forward
      keeps its port for the life of the tunnel and never moves (the proxy route and the
      notebook's API URL are built from it): after every reconnect it is re-bound on the same
      port, and if that port is taken (also when a forward is added on a fixed port) it is
      retried with backoff while the connection stays up for commands. :attr:`forward_problem`
      says why a forward is missing; :meth:`wait_ready` waits until all are bound.
    * :meth:`run` runs a command over the current connection, waiting (bounded) for a
      reconnect if the connection is down.
    * A connection that goes silent is declared dead by keepalives
      ``keepalive_interval * (keepalive_count_max + 1)`` seconds after the last packet from the
      machine at most; a connection that closes is noticed at once.
    * When the connection drops the tunnel reconnects by itself: first retry after
      ``reconnect_initial_delay``, doubling up to ``reconnect_max_delay``, forever until
      :meth:`close`, except that a changed host key stops it for good (:attr:`failure`).
    * :meth:`close` is idempotent and leaves no listener, connection or task behind.
    """

    def __init__(
        self,
        target: SSHTarget,
        *,
        keepalive_interval: float = 15,
        keepalive_count_max: int = 3,
        connect_timeout: float = 15,
        reconnect_initial_delay: float = 0.25,
        reconnect_max_delay: float = 5,
        encryption_algs=("aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                         "chacha20-poly1305@openssh.com", "aes128-ctr"),
        log: logging.Logger | None = None,
    ):
        self.target = target
        self.keepalive_interval = keepalive_interval
        self.keepalive_count_max = keepalive_count_max
        self.connect_timeout = connect_timeout
        self.reconnect_initial_delay = reconnect_initial_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.encryption_algs = list(encryption_algs)
        self.log = log or logging.getLogger(__name__)
        self.host_key = target.host_key or ""
        self.failure: Exception | None = None
        self.forward_problem: str | None = None
        self.reconnects = 0
        self._conn = None
        self._forwards: list[_Forward] = []
        self._connected = asyncio.Event()
        self._ready = asyncio.Event()  # connected and every forward bound
        self._rebind = asyncio.Event()  # a forward needs binding: wake the supervisor
        self._bind_lock = asyncio.Lock()
        self._closing = False
        self._supervisor = None
        self._client_keys = None
        self._known_hosts = None

    # -- connection ------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set() and self._conn is not None

    async def _load_files(self):
        """Read the client key/certificate and known_hosts in a worker thread (once)."""
        t = self.target
        if self._client_keys is None:
            key = await asyncio.to_thread(asyncssh.read_private_key, t.key_path)
            if t.certificate_path:
                cert = await asyncio.to_thread(asyncssh.read_certificate, t.certificate_path)
                self._client_keys = [(key, cert)]
            else:
                self._client_keys = [key]
        if self._known_hosts is None:
            if self.host_key:
                self._known_hosts = ([asyncssh.import_public_key(self.host_key)], [], [])
            elif t.known_hosts and await asyncio.to_thread(os.path.exists, t.known_hosts):
                self._known_hosts = await asyncio.to_thread(asyncssh.read_known_hosts, t.known_hosts)
            else:
                self._known_hosts = ([], [], [])

    async def _open_connection(self):
        await self._load_files()
        t = self.target
        recorder = _HostKeyRecorder(
            self._known_hosts, accept_unknown=t.trust_on_first_use and not self.host_key
        )
        try:
            conn = await asyncssh.connect(
                t.host,
                t.port,
                username=t.username,
                client_keys=self._client_keys,
                known_hosts=self._known_hosts,
                client_factory=lambda: recorder,
                keepalive_interval=self.keepalive_interval,
                keepalive_count_max=self.keepalive_count_max,
                connect_timeout=self.connect_timeout,
                login_timeout=self.connect_timeout,
                encryption_algs=self.encryption_algs,
                agent_path=None,
                config=None,
                preferred_auth="publickey",
            )
        except asyncssh.HostKeyNotVerifiable as e:
            offered = recorder.offered
            what = (
                f"offers {offered.get_algorithm()} key {offered.get_fingerprint()}"
                if offered is not None else "offers an unexpected host key"
            )
            if self.host_key:
                trusted = f"the pinned key {asyncssh.import_public_key(self.host_key).get_fingerprint()}"
            elif recorder.changed:
                trusted = f"the key the known_hosts file {t.known_hosts} lists for it: the key changed"
                if t.trust_on_first_use:
                    trusted += " (trust_on_first_use applies only to machines known_hosts has no entry for)"
            elif t.known_hosts:
                trusted = f"the known_hosts file {t.known_hosts}"
            else:
                trusted = "any configured host key (none is configured)"
            raise HostKeyError(
                f"Refusing to connect to {t}: the machine {what}, which does not match {trusted}."
                " If the machine was legitimately re-installed, update the trusted key;"
                " otherwise this may be an impersonation attempt."
            ) from e
        _set_nodelay(conn)
        if not self.host_key:
            key = conn.get_server_host_key()
            self.host_key = " ".join(key.export_public_key("openssh").decode().split()[:2])
            if recorder.offered is not None:
                self.log.warning("Trusting %s on first use: host key %s", t, key.get_fingerprint())
            # from now on, reconnects accept this key only
            self._known_hosts = ([key], [], [])
        return conn

    async def connect(self) -> None:
        """Open the connection (see class doc) and start supervising it."""
        if self._closing:
            raise TunnelClosed(f"tunnel to {self.target} is closed")
        self._conn = await self._open_connection()
        self._connected.set()
        self._ready.set()
        self._supervisor = asyncio.create_task(self._supervise())

    async def _supervise(self):
        """Keep the forwards bound while the connection lives; reconnect when it drops."""
        while True:
            await self._keep_forwards(self._conn)
            if self._closing:
                return
            self._connected.clear()
            self._ready.clear()
            for fwd in self._forwards:
                fwd.listener = None  # closed with the connection
            self.log.warning("SSH connection to %s lost; reconnecting", self.target)
            if not await self._reconnect():
                return

    async def _reconnect(self) -> bool:
        """Open a new connection with backoff; False if closing or the host key changed."""
        delay = self.reconnect_initial_delay
        while not self._closing:
            try:
                self._conn = await self._open_connection()
            except HostKeyError as e:
                self.failure = e
                TUNNEL_RECONNECTS.labels(result="host_key_changed").inc()
                self.log.error("%s; not reconnecting", e)
                return False
            except (OSError, asyncssh.Error, asyncio.TimeoutError) as e:
                self.log.info("Reconnecting to %s failed (%s); retry in %.2fs", self.target, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_delay)
                continue
            self.reconnects += 1
            TUNNEL_RECONNECTS.labels(result="reconnected").inc()
            self._connected.set()
            self.log.info("SSH connection to %s re-established", self.target)
            return True
        return False

    async def _keep_forwards(self, conn):
        """Until ``conn`` closes: bind every forward that has no listener, on its own port,
        retrying with backoff while a port is taken."""
        delay = self.reconnect_initial_delay
        while not conn.is_closed() and not self._closing:
            self._rebind.clear()
            if await self._bind_missing(conn):
                delay, timeout = self.reconnect_initial_delay, None
            else:
                timeout, delay = delay, min(delay * 2, self.reconnect_max_delay)
            waiters = [asyncio.ensure_future(conn.wait_closed()), asyncio.ensure_future(self._rebind.wait())]
            try:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the connection to be up; return whether it is."""
        return await self._wait(self._connected, timeout)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the connection to be up with every forward bound."""
        return await self._wait(self._ready, timeout)

    async def _wait(self, event: asyncio.Event, timeout: float) -> bool:
        if self.failure or self._closing:
            return False
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def _current(self, timeout: float):
        if not await self.wait_connected(timeout):
            raise TunnelClosed(
                str(self.failure) if self.failure else f"SSH connection to {self.target} is down"
            )
        return self._conn

    # -- forwards --------------------------------------------------------------------------
    async def _listen(self, conn, fwd: _Forward, port: int):
        if fwd.kind == "local":
            return await conn.forward_local_port("127.0.0.1", port, fwd.dest_host, fwd.dest_port,
                                                 accept_handler=_channel_pacer().admit)
        return await conn.forward_remote_port("127.0.0.1", port, fwd.dest_host, fwd.dest_port)

    async def _bind(self, conn, fwd: _Forward):
        fwd.listener = await self._listen(conn, fwd, fwd.listen_port)
        fwd.listen_port = fwd.listener.get_port()

    async def _bind_missing(self, conn) -> bool:
        """Try once to bind each forward without a listener; True (and ready) if all are bound."""
        async with self._bind_lock:
            for fwd in self._forwards:
                if fwd.listener is not None or conn.is_closed():
                    continue
                try:
                    await self._bind(conn, fwd)
                except _BIND_ERRORS as e:
                    problem = (
                        f"{fwd.kind} forward port {fwd.listen_port} "
                        f"({'hub' if fwd.kind == 'local' else 'machine'} side of {self.target})"
                        f" cannot be bound: {e}"
                    )
                    level = logging.DEBUG if problem == fwd.problem else logging.ERROR
                    self.log.log(level, "%s; the port is kept, retrying", problem)
                    fwd.problem = problem
                else:
                    if fwd.problem:
                        self.log.info("%s forward port %s bound again", fwd.kind, fwd.listen_port)
                    fwd.problem = ""
            problems = [f.problem for f in self._forwards if f.listener is None and f.problem]
            self.forward_problem = "; ".join(problems) or None
            bound = all(f.listener is not None for f in self._forwards) and not conn.is_closed()
            if bound:
                self._ready.set()
            else:
                self._ready.clear()
            return bound

    async def forward_local(self, listen_port: int, dest_port: int, dest_host="127.0.0.1") -> int:
        """Listen on the hub's 127.0.0.1:``listen_port``, connect to the machine's dest."""
        return await self._add(_Forward("local", listen_port, dest_host, dest_port))

    async def forward_remote(self, listen_port: int, dest_host: str, dest_port: int) -> int:
        """Listen on the machine's 127.0.0.1:``listen_port``, connect to dest from the hub."""
        return await self._add(_Forward("remote", listen_port, dest_host, dest_port))

    async def _add(self, fwd: _Forward) -> int:
        conn = await self._current(self.connect_timeout)
        if not fwd.listen_port:
            async with self._bind_lock:
                await self._bind(conn, fwd)  # raises: nothing is kept
                self._forwards.append(fwd)
            return fwd.listen_port
        self._forwards.append(fwd)
        if not await self._bind_missing(conn):
            self._rebind.set()  # the supervisor retries it
        return fwd.listen_port

    def port_of(self, kind: str) -> int | None:
        """Listening port of the first forward of ``kind`` ("local"/"remote")."""
        return next((f.listen_port for f in self._forwards if f.kind == kind), None)

    # -- commands --------------------------------------------------------------------------
    async def run(self, command: str, input: str = "", timeout: float = 30):
        """Run ``command`` on the machine with ``input`` on stdin; return asyncssh's result."""
        conn = await self._current(timeout)
        return await asyncio.wait_for(conn.run(command, input=input, check=False), timeout)

    # -- teardown --------------------------------------------------------------------------
    async def close(self) -> None:
        """Close the forwards and the connection and stop reconnecting (idempotent)."""
        self._closing = True
        self._connected.clear()
        self._ready.clear()
        if self._supervisor is not None:
            self._supervisor.cancel()
            try:
                await self._supervisor
            except (asyncio.CancelledError, Exception):
                pass
            self._supervisor = None
        for fwd in self._forwards:
            if fwd.listener is not None:
                fwd.listener.close()
        if self._conn is not None:
            self._conn.close()
            try:
                await asyncio.wait_for(self._conn.wait_closed(), 5)
            except asyncio.TimeoutError:
                pass
            self._conn = None
