"""An asyncio front for the blocking ldap3 library: a bounded thread pool with reused connections.

Each :class:`LDAPClient` owns a ``ThreadPoolExecutor`` of ``pool_size`` workers and a stack of
idle, bound ldap3 connections (never more than ``pool_size``, since a connection is only held by a
worker while it runs one operation). Nothing here ever blocks the event loop.

Contract of every coroutine: it returns the operation's result or raises a
:class:`~ldap_hooks.errors.DirectoryError`:

* :class:`DirectoryUnavailable` - no TCP/TLS connection, connection lost, or timed out. An
  operation that fails this way on a *reused* connection (e.g. the server restarted since) is
  retried once on a fresh connection; a fresh connection that fails is not retried.
* :class:`DirectoryBindRefused` - the server refused the configured credentials.
* :class:`DirectoryResultError` - the server answered with a non-success result.

TLS: ``ldaps://`` URLs and ``start_tls`` always verify the certificate chain (``ca_certs_file``
or the system CAs) and that the certificate names the host (DNS name or IP address).
"""

import asyncio
import math
import re
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import ldap3
from ldap3.core import exceptions as lexc
from ldap3.utils.ciDict import CaseInsensitiveDict

from .errors import DirectoryBindRefused, DirectoryResultError, DirectoryUnavailable

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
        self.settings = settings
        self._tls = ldap3.Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=settings.ca_certs_file or None,
        )
        self._executor = ThreadPoolExecutor(
            max_workers=settings.pool_size, thread_name_prefix="ldap-hooks"
        )
        self._idle: list[ldap3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._object_classes: frozenset[str] | None = None
        self._schema_generation = 0
        self._schema_lock: tuple | None = None

    # ---- connections (worker threads only) -----------------------------------------------------
    def _connect(self) -> ldap3.Connection:
        s = self.settings
        # A new Server per connection: a shared one would remember a failed address and refuse
        # to retry it for a while after the directory is back.
        server = ldap3.Server(
            s.url, tls=self._tls, connect_timeout=s.connect_timeout, get_info=ldap3.NONE
        )
        conn = ldap3.Connection(
            server,
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
        for attempt in (1, 2):
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = self._connect()
            try:
                result = operation(conn)
            except lexc.LDAPOperationResult as e:
                self._release(conn)
                raise DirectoryResultError(e.description or str(e.result), str(e)) from e
            except _CONNECTION_ERRORS as e:
                self._drop(conn)
                if reused and attempt == 1:
                    continue
                raise DirectoryUnavailable(f"lost connection to {self.settings.url}: {e}") from e
            except BaseException:
                self._drop(conn)
                raise
            self._release(conn)
            return result

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
        """Unbind idle connections and stop the workers (in-flight operations finish first)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            self._drop(conn)
        self._executor.shutdown(wait=False)


_clients: dict[Settings, LDAPClient] = {}


def get_client(settings: Settings) -> LDAPClient:
    """The shared client for these settings (created on first use, reused by every spawn)."""
    client = _clients.get(settings)
    if client is None:
        client = _clients[settings] = LDAPClient(settings)
    return client


def close_clients() -> None:
    """Close every shared client (hub shutdown, tests)."""
    while _clients:
        _, client = _clients.popitem()
        client.close()
