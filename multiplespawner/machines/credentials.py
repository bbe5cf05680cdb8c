"""Per-server SSH credentials: a client key pair the hub logs in with and a host key pair the
machine presents.

For every notebook server that runs on a machine, :class:`CredentialStore` makes

* an ed25519 **client key**: its private half is written to ``<base_dir>/<server>-<random>/id_ed25519``
  (file 0600, directory 0700); its public half is what the machine authorises (the provider puts it
  into the machine, the configurer gives it to the notebook user);
* an ed25519 **host key**: its private half is handed to the provider once, in memory, so the
  machine presents it as its SSH host key; it is never written to the hub's disk. Its public half is
  pinned: every connection to the machine checks it, none trusts on first use. For a machine that
  already has a host key (a pool host), the caller gives its public half and none is generated;
* on request (``certificate_principals``) an OpenSSH **user certificate** for the client key,
  signed by the hub CA key (``ca_key_file``), for machines that trust the CA
  (``TrustedUserCAKeys``) instead of a per-server authorized key. It is valid for the given login
  names only, for ``certificate_validity`` seconds, and permits port forwarding and commands but
  no PTY, agent or X11 forwarding and no ``~/.ssh/rc`` (what ``restrict,port-forwarding`` does
  for an authorized key).

The hub's own keys (``~/.ssh``, an agent) are never used or copied: only these per-server files.
:meth:`ServerCredentials.to_state` is a small JSON dict (directory, public keys) from which
:meth:`CredentialStore.from_state` finds the files again after a hub restart, and
:meth:`CredentialStore.remove` deletes them (idempotent; it refuses paths outside ``base_dir``).
Key generation takes well under a millisecond; the few small file operations run in a thread so
a slow disk cannot stall the event loop. Nothing here logs key material.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
from traitlets import Integer, Unicode
from traitlets.config import LoggingConfigurable

CLIENT_KEY_NAME = "id_ed25519"
CERTIFICATE_NAME = "id_ed25519-cert.pub"


@dataclass
class ServerCredentials:
    """The SSH credentials of one notebook server.

    ``host_private_key`` is only set on the object :meth:`CredentialStore.create` returns (the
    provider needs it to create the machine); it is in no file and not in :meth:`to_state`.
    """

    directory: Path
    client_public_key: str  #: OpenSSH public key line the machine authorises
    host_public_key: str  #: OpenSSH public key line the machine must present (pinned)
    certificate: str = ""  #: OpenSSH user certificate line for the client key, if a CA signed it
    host_private_key: str = field(default="", repr=False)

    @property
    def client_key_path(self) -> Path:
        """The client private key file (0600)."""
        return self.directory / CLIENT_KEY_NAME

    @property
    def certificate_path(self) -> Path | None:
        """The certificate file next to the client key, if there is one."""
        return self.directory / CERTIFICATE_NAME if self.certificate else None

    def known_hosts_line(self, host: str, port: int) -> str:
        """An OpenSSH known_hosts line pinning the host key for ``host:port``."""
        target = host if port == 22 else f"[{host}]:{port}"
        return f"{target} {self.host_public_key}\n"

    def to_state(self) -> dict:
        """JSON-serialisable: enough to find and remove the files after a hub restart."""
        state = {
            "directory": str(self.directory),
            "client_public_key": self.client_public_key,
            "host_public_key": self.host_public_key,
        }
        if self.certificate:
            state["certificate"] = self.certificate
        return state


def _safe_name(name: str) -> str:
    """A file-name-safe version of a server name (``alice/gpu`` -> ``alice-gpu``)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip(".-")
    return cleaned[:60] or "server"


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (never briefly readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class CredentialStore(LoggingConfigurable):
    """Makes, finds and removes per-server SSH credentials under :attr:`base_dir`."""

    base_dir = Unicode(
        "server-credentials",
        config=True,
        help="""Directory for the per-server SSH client keys (one 0700 subdirectory per
        server, private keys 0600). A relative path is taken from the hub's working directory.
        It must be on a local disk only the hub's user can read.""",
    )

    ca_key_file = Unicode(
        "",
        config=True,
        help="""Private key file of the hub's SSH certificate authority (OpenSSH format, no
        passphrase, readable by the hub only). Templates whose `authenticator` is `certificate`
        log in to their machines with an OpenSSH user certificate this CA signs for each
        server's client key; the machines trust the CA's public key (sshd `TrustedUserCAKeys`).
        Empty: no certificates can be issued.""",
    )

    certificate_validity = Integer(
        24 * 3600,
        config=True,
        help="""Seconds a per-server certificate is valid from its creation, unless the
        template's authenticator sets `validity_seconds`.""",
    )

    @property
    def root(self) -> Path:
        return Path(self.base_dir).absolute()

    async def ca_public_key(self) -> str:
        """The CA's OpenSSH public key line (what machines put into ``TrustedUserCAKeys``)."""
        if not self.ca_key_file:
            raise ValueError("CredentialStore.ca_key_file is not set: there is no hub CA")
        key = await asyncio.to_thread(asyncssh.read_private_key, self.ca_key_file)
        return key.export_public_key("openssh").decode().strip()

    async def create(self, server_name: str, certificate_principals: list[str] | None = None,
                     host_public_key: str = "", certificate_validity: int | None = None) -> ServerCredentials:
        """Make a fresh client key (written to disk) and host key (in memory) for one server.

        ``server_name`` only names the directory (a random suffix keeps it unique).
        ``certificate_principals``: also issue a CA-signed certificate valid for these login
        names (needs ``ca_key_file``), for ``certificate_validity`` seconds (default: the
        trait). ``host_public_key``: the machine's existing host key; no host key is generated.
        """
        client_key = asyncssh.generate_private_key("ssh-ed25519", comment=f"jupyterhub-{server_name}")
        host_private = ""
        if not host_public_key:
            host_key = asyncssh.generate_private_key("ssh-ed25519", comment="")
            host_public_key = host_key.export_public_key("openssh").decode().strip()
            host_private = host_key.export_private_key("openssh").decode()
        certificate = ""
        if certificate_principals is not None:
            if not self.ca_key_file:
                raise ValueError("a certificate was asked for but CredentialStore.ca_key_file is not set")
            validity = certificate_validity or self.certificate_validity
            certificate = await asyncio.to_thread(
                self._certify, client_key, server_name, certificate_principals, validity
            )
        directory = self.root / f"{_safe_name(server_name)}-{secrets.token_hex(4)}"
        credentials = ServerCredentials(
            directory=directory,
            client_public_key=client_key.export_public_key("openssh").decode().strip(),
            host_public_key=host_public_key,
            certificate=certificate,
            host_private_key=host_private,
        )
        await asyncio.to_thread(self._write, credentials, client_key.export_private_key("openssh"))
        self.log.info("Created SSH credentials for %s in %s%s", server_name, directory,
                      " (with a CA certificate)" if certificate else "")
        return credentials

    def _certify(self, client_key, server_name: str, principals, validity: int) -> str:
        ca_key = asyncssh.read_private_key(self.ca_key_file)
        now = int(time.time())
        cert = ca_key.generate_user_certificate(
            client_key,
            key_id=f"jupyterhub-{server_name}",
            principals=list(principals),
            valid_after=now - 60,  # tolerate a machine clock slightly behind the hub's
            valid_before=now + validity,
            # like "restrict,port-forwarding" on an authorized key: the tunnels and commands only
            permit_x11_forwarding=False,
            permit_agent_forwarding=False,
            permit_pty=False,
            permit_user_rc=False,
            permit_port_forwarding=True,
        )
        return cert.export_certificate("openssh").decode().strip()

    def _write(self, credentials: ServerCredentials, client_private: bytes) -> None:
        root = self.root
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        credentials.directory.mkdir(mode=0o700)
        try:
            os.chmod(credentials.directory, 0o700)  # whatever the umask
            _write_private(credentials.client_key_path, client_private)
            _write_private(credentials.directory / f"{CLIENT_KEY_NAME}.pub",
                           (credentials.client_public_key + "\n").encode())
            if credentials.certificate:
                _write_private(credentials.directory / CERTIFICATE_NAME,
                               (credentials.certificate + "\n").encode())
        except BaseException:
            shutil.rmtree(credentials.directory, ignore_errors=True)
            raise

    def from_state(self, state: dict) -> ServerCredentials | None:
        """The credentials a :meth:`ServerCredentials.to_state` dict describes (None if empty)."""
        if not state or not state.get("directory"):
            return None
        return ServerCredentials(
            directory=self._inside_root(state["directory"]),
            client_public_key=state["client_public_key"],
            host_public_key=state["host_public_key"],
            certificate=state.get("certificate", ""),
        )

    def _inside_root(self, directory: str | Path) -> Path:
        """``directory`` as an absolute path, refusing anything not directly under base_dir."""
        path = Path(directory).absolute()
        if path.parent != self.root or path.name in ("", ".", ".."):
            raise ValueError(f"{path} is not a credentials directory under {self.root}")
        return path

    async def remove(self, credentials: ServerCredentials | dict | None) -> None:
        """Delete a server's key files; a no-op if they are already gone (or nothing is given)."""
        if isinstance(credentials, dict):
            credentials = self.from_state(credentials)
        if credentials is None:
            return
        directory = self._inside_root(credentials.directory)
        existed = await asyncio.to_thread(self._remove_dir, directory)
        if existed:
            self.log.info("Removed SSH credentials in %s", directory)

    @staticmethod
    def _remove_dir(directory: Path) -> bool:
        if not directory.exists():
            return False
        shutil.rmtree(directory)
        return True

    def list_directories(self) -> list[Path]:
        """Every per-server credentials directory under base_dir (for reaping and leak checks)."""
        root = self.root
        if not root.is_dir():
            return []
        return sorted(p for p in root.iterdir() if p.is_dir())
