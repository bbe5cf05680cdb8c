"""An asyncio front for the blocking ldap3 library: a bounded thread pool with reused connections.

Each :class:`LDAPClient` owns a ``ThreadPoolExecutor`` of ``pool_size`` workers and a stack of
idle, bound ldap3 connections (never more than ``pool_size``, since a connection is only held by a
worker while it runs one operation). Nothing here ever blocks the event loop.

Contract of every coroutine: it returns the operation's result or raises a
:class:`~ldap_hooks.errors.DirectoryError`:

* :class:`DirectoryUnavailable` - no TCP/TLS connection, connection lost, or timed out.
  Idle connections the server has closed since their last use (it restarted, or dropped idle
  clients) are recognised before use and replaced, so a directory that restarted between two
  spawns costs the next spawn nothing. An operation whose *reused* connection is lost while it
  runs (the server went away between the check and the request) is retried once, always on a
  fresh connection; a fresh connection that fails, and an operation that timed out (the server
  is hung or overloaded, a retry would only double the wait), are not retried.
* Every wait is bounded: connecting by ``connect_timeout``, each answer by
  ``operation_timeout``; so an operation fails after at most about
  ``connect_timeout + 2 * operation_timeout`` of work (bind and request), plus the time it
  queued for a worker behind others.
* :class:`DirectoryBindRefused` - the server refused the configured credentials.
* :class:`DirectoryResultError` - the server answered with a non-success result. Its detail
  names the result and the server's diagnostic, never the DN or values of the request.

An option ldap3 cannot work with (a URL or port it cannot parse, a CA file it cannot read, a
filter it cannot encode) raises :class:`~ldap_hooks.errors.LDAPConfigError` naming the option,
when the client is made (URL, CA file) or when the operation is tried (filter, DN).

:meth:`LDAPClient.close` never blocks: the idle connections are unbound by the worker pool.
The shared clients (:func:`get_client`) are closed at interpreter exit, i.e. when the hub
process ends; :func:`close_clients` closes them earlier.

TLS: ``ldaps://`` URLs and ``start_tls`` always verify the certificate chain (``ca_certs_file``
or the system CAs) and that the certificate names the host (DNS name or IP address).
"""

import asyncio
import atexit
import math
import re
import select
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import ldap3
from ldap3.core import exceptions as lexc
from ldap3.utils.ciDict import CaseInsensitiveDict

from .errors import DirectoryBindRefused, DirectoryResultError, DirectoryUnavailable, LDAPConfigError

_OC_NAMES = re.compile(r"NAME\s+(?:'([^']+)'|\(([^)]*)\))", re.I)
_CONNECTION_ERRORS = (
    lexc.LDAPCommunicationError,
    lexc.LDAPResponseTimeoutError,
    lexc.LDAPStartTLSError,
    lexc.LDAPSSLConfigurationError,
    lexc.LDAPCertificateError,
    ssl.SSLError,
    OSError,
)


@dataclass(frozen=True)
class Settings:
    """Everything that identifies one directory connection (the key of the client registry)."""

    url: str
    user: str = ""
    password: str = field(default="", repr=False)
    start_tls: bool = False
    ca_certs_file: str = ""
    connect_timeout: float = 5.0
    operation_timeout: float = 10.0
    pool_size: int = 4

    @classmethod
    def from_config(cls, ldap) -> "Settings":
        return cls(
            url=ldap.url,
            user=ldap.user,
            password=ldap.password,
            start_tls=ldap.start_tls,
            ca_certs_file=ldap.ca_certs_file,
            connect_timeout=ldap.connect_timeout,
            operation_timeout=ldap.operation_timeout,
            pool_size=ldap.pool_size,
        )


@dataclass
class Entry:
    """A search result: its DN and attributes (case-insensitive names, lists of str values)."""

    dn: str
    attributes: CaseInsensitiveDict


class LDAPClient:
    """Async LDAP operations for one server and bind identity (see the module docstring)."""

    def __init__(self, settings: Settings):
        """Check that ldap3 can use ``settings`` (raises :class:`LDAPConfigError`); no I/O
        besides reading the CA file."""
        self.settings = settings
        self._tls = self._make_tls(settings.ca_certs_file)
        try:
            self._server()
        except lexc.LDAPExceptionError as e:
            raise LDAPConfigError(
                f"LDAP.url {settings.url!r} is not a usable LDAP URL ({type(e).__name__}: {e})"
            ) from e
        self._executor = ThreadPoolExecutor(
            max_workers=settings.pool_size, thread_name_prefix="ldap-hooks"
        )
        self._idle: list[ldap3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._object_classes: frozenset[str] | None = None
        self._schema_generation = 0
        self._schema_lock: tuple | None = None

    @staticmethod
    def _make_tls(ca_certs_file: str) -> ldap3.Tls:
        try:
            if ca_certs_file:
                # what ldap3 would do at the first TLS connection, done now so that a missing or
                # unreadable file is reported as a configuration error, not as an outage
                ssl.create_default_context(cafile=ca_certs_file)
            return ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_certs_file or None)
        except (OSError, ssl.SSLError, lexc.LDAPExceptionError) as e:
            raise LDAPConfigError(
                f"LDAP.ca_certs_file {ca_certs_file!r} cannot be read as PEM CA certificates"
                f" ({type(e).__name__}: {e})"
            ) from e

    def _server(self) -> ldap3.Server:
        s = self.settings
        return ldap3.Server(s.url, tls=self._tls, connect_timeout=s.connect_timeout, get_info=ldap3.NONE)

    # ---- connections (worker threads only) -----------------------------------------------------
    def _connect(self) -> ldap3.Connection:
        s = self.settings
        # A new Server per connection: a shared one would remember a failed address and refuse
        # to retry it for a while after the directory is back.
        conn = ldap3.Connection(
            self._server(),
            user=s.user or None,
            password=s.password or None,
            receive_timeout=max(1, math.ceil(s.operation_timeout)),  # ldap3 packs it as an integer
            raise_exceptions=True,
            read_only=False,
        )
        try:
            conn.open()
            if s.start_tls:
                conn.start_tls()
            if not conn.bind():
                raise DirectoryBindRefused(f"bind as {s.user!r} refused: {conn.result}")
        except (lexc.LDAPInvalidCredentialsResult, lexc.LDAPBindError) as e:
            self._drop(conn)
            raise DirectoryBindRefused(f"bind as {s.user!r} to {s.url} refused: {e}") from e
        except lexc.LDAPOperationResult as e:
            self._drop(conn)
            raise DirectoryBindRefused(f"bind as {s.user!r} to {s.url} failed: {e}") from e
        except _CONNECTION_ERRORS as e:
            self._drop(conn)
            raise DirectoryUnavailable(f"cannot connect to {s.url}: {e}") from e
        except lexc.LDAPExceptionError as e:
            self._drop(conn)
            raise LDAPConfigError(f"connecting to {s.url} failed ({type(e).__name__}: {e})") from e
        except BaseException:
            self._drop(conn)
            raise
        return conn

    @staticmethod
    def _drop(conn: ldap3.Connection) -> None:
        try:
            conn.unbind()
        except Exception:  # the connection is being thrown away; its state does not matter
            pass

    def _run(self, operation):
        """Run ``operation(conn)`` on an idle or new connection (in a worker thread)."""
        conn = self._take_idle()
        reused = conn is not None
        while True:
            if conn is None:
                conn = self._connect()
            try:
                result = operation(conn)
            except lexc.LDAPOperationResult as e:
                self._release(conn)
                raise DirectoryResultError(e.description or str(e.result), _result_detail(e)) from e
            except _CONNECTION_ERRORS as e:
                self._drop(conn)
                if reused and not _timed_out(e):
                    conn, reused = None, False  # lost under us: once more, on a new connection
                    continue
                raise DirectoryUnavailable(f"lost connection to {self.settings.url}: {e}") from e
            except lexc.LDAPExceptionError as e:  # refused by ldap3 itself: bad filter, DN, ...
                self._drop(conn)
                raise LDAPConfigError(f"ldap3 refused the request ({type(e).__name__}: {e})") from e
            except BaseException:
                self._drop(conn)
                raise
            self._release(conn)
            return result

    def _take_idle(self) -> ldap3.Connection | None:
        """An idle connection the server has not closed, or None; closed ones are dropped."""
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if _still_open(conn):
                return conn
            self._drop(conn)

    def _release(self, conn: ldap3.Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        self._drop(conn)

    async def _call(self, operation):
        if self._closed:
            raise DirectoryUnavailable("LDAP client is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, operation)

    # ---- operations ------------------------------------------------------------------------------
    async def search(
        self, base: str, search_filter: str, attributes=("*",), scope: str = ldap3.SUBTREE,
        size_limit: int = 0,
    ) -> list[Entry]:
        """Entries under ``base`` matching ``search_filter`` (which must be escaped already)."""

        def op(conn):
            conn.search(base, search_filter, search_scope=scope, attributes=list(attributes),
                        size_limit=size_limit)
            return [
                Entry(
                    item["dn"],
                    CaseInsensitiveDict(
                        {k: [v.decode("utf-8", "replace") for v in vals]
                         for k, vals in item["raw_attributes"].items()}
                    ),
                )
                for item in conn.response
                if item.get("type") == "searchResEntry"
            ]

        return await self._call(op)

    async def add(self, dn: str, object_classes, attributes: dict) -> None:
        """Add the entry ``dn`` (escaped) with the given object classes and attributes."""
        await self._call(lambda conn: conn.add(dn, list(object_classes), dict(attributes)))

    async def modify(self, dn: str, changes: dict) -> None:
        """Apply ``changes`` (ldap3 format) to ``dn`` in one atomic modify operation."""
        await self._call(lambda conn: conn.modify(dn, changes))

    async def object_classes(self, refresh: bool = False) -> frozenset[str]:
        """Lower-case names of every object class in the server's schema.

        Read once and cached; ``refresh`` reads it again. Concurrent callers share one read.
        """
        loop = asyncio.get_running_loop()
        if self._schema_lock is None or self._schema_lock[0] is not loop:
            self._schema_lock = (loop, asyncio.Lock())
        generation = self._schema_generation
        async with self._schema_lock[1]:
            if self._object_classes is None or (refresh and generation == self._schema_generation):
                self._object_classes = await self._read_object_classes()
                self._schema_generation += 1
        return self._object_classes

    async def _read_object_classes(self) -> frozenset[str]:
        root = await self.search("", "(objectClass=*)", ["subschemaSubentry"], scope=ldap3.BASE)
        found = root[0].attributes.get("subschemaSubentry") if root else None
        schema = await self.search(
            found[0] if found else "cn=Subschema", "(objectClass=subschema)",
            ["objectClasses"], scope=ldap3.BASE,
        )
        names = set()
        for definition in schema[0].attributes.get("objectClasses", []) if schema else []:
            for single, several in _OC_NAMES.findall(definition):
                names.update(n.lower() for n in (single or several.replace("'", " ")).split())
        return frozenset(names)

    def close(self) -> None:
        """Refuse new operations, unbind the idle connections and stop the workers.

        Never blocks, so it may be called on the event loop: the unbinds are queued to the
        worker pool behind any in-flight operation (whose connection is unbound when it
        finishes), and the workers end when the queue is empty. Only when the pool takes no
        more work (the interpreter is exiting, no event loop runs) are they unbound here.
        """
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            try:
                self._executor.submit(self._drop, conn)
            except RuntimeError:
                self._drop(conn)
        self._executor.shutdown(wait=False)


def _still_open(conn: ldap3.Connection) -> bool:
    """Whether an idle connection can still carry a request.

    An LDAP server sends nothing unasked to an idle client except a notice of disconnection,
    so anything to read on its socket (data, end of stream, an error) means the server has
    closed or is closing it. Costs one non-blocking poll."""
    sock = getattr(conn, "socket", None)
    if conn.closed or sock is None:
        return False
    try:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    except (OSError, ValueError):  # closed underneath: fileno() is -1
        return False


def _timed_out(error: BaseException) -> bool:
    """Whether a connection error is a wait that ran out (not a connection the server closed).

    ldap3 raises its socket errors as classes that also derive from the ``OSError`` it caught,
    so a receive that hit ``operation_timeout`` is a ``TimeoutError``."""
    return isinstance(error, (lexc.LDAPResponseTimeoutError, TimeoutError))


def _result_detail(e: lexc.LDAPOperationResult) -> str:
    """The operator's view of a refused operation: result, server diagnostic, operation.

    Not ``str(e)``, which carries the request's DN (built from user data)."""
    message = f": {e.message}" if e.message else ""
    return f"{e.description or e.result} ({e.type or 'operation'}){message}"


_clients: dict[Settings, LDAPClient] = {}


def get_client(settings: Settings) -> LDAPClient:
    """The shared client for these settings (created on first use, reused by every spawn).

    Raises :class:`LDAPConfigError` if ldap3 cannot use the settings."""
    client = _clients.get(settings)
    if client is None:
        client = _clients[settings] = LDAPClient(settings)
    return client


def close_clients() -> None:
    """Close every shared client without blocking (see :meth:`LDAPClient.close`).

    Runs at interpreter exit by itself; call it to close the clients earlier (tests, a hub
    that reconfigures LDAP). The next :func:`get_client` makes new ones."""
    while _clients:
        _, client = _clients.popitem()
        client.close()


atexit.register(close_clients)  # the hub process ends: unbind what is left
