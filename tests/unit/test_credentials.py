"""Per-server SSH credentials: key types, file permissions, state round trip, removal."""

import json
import stat

import asyncssh
from asyncssh.public_key import CERT_TYPE_USER
import pytest

from multiplespawner.machines.credentials import CredentialStore


@pytest.fixture
def store(tmp_path):
    return CredentialStore(base_dir=str(tmp_path / "keys"))


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


async def test_create_writes_only_the_client_key_private_to_the_hub(store):
    creds = await store.create("alice/gpu lab")
    assert creds.directory.parent == store.root
    assert creds.directory.name.startswith("alice-gpu-lab-")
    assert mode(store.root) == 0o700
    assert mode(creds.directory) == 0o700
    files = {p.name: mode(p) for p in creds.directory.iterdir()}
    assert files == {"id_ed25519": 0o600, "id_ed25519.pub": 0o600}

    client = asyncssh.read_private_key(creds.client_key_path)
    assert client.algorithm == b"ssh-ed25519"
    assert client.export_public_key("openssh").decode().split()[:2] == creds.client_public_key.split()[:2]

    # the host private key exists only in memory, and matches the pinned public key
    host = asyncssh.import_private_key(creds.host_private_key)
    assert host.algorithm == b"ssh-ed25519"
    assert host.export_public_key("openssh").decode().split()[:2] == creds.host_public_key.split()[:2]
    assert all(creds.host_private_key not in p.read_text() for p in creds.directory.iterdir())
    assert "host_private_key" not in repr(creds)


async def test_permissions_do_not_depend_on_the_umask(store):
    import os

    old = os.umask(0)
    try:
        creds = await store.create("alice")
    finally:
        os.umask(old)
    assert mode(creds.directory) == 0o700
    assert mode(creds.client_key_path) == 0o600


async def test_every_server_gets_its_own_keys(store):
    a, b = await store.create("alice"), await store.create("alice")
    assert a.directory != b.directory
    assert a.client_public_key != b.client_public_key
    assert a.host_public_key != b.host_public_key


async def test_state_round_trip_after_restart(store, tmp_path):
    creds = await store.create("bob")
    state = json.loads(json.dumps(creds.to_state()))
    assert set(state) == {"directory", "client_public_key", "host_public_key"}
    assert "PRIVATE" not in json.dumps(state)

    restarted = CredentialStore(base_dir=str(tmp_path / "keys"))
    again = restarted.from_state(state)
    assert again.client_key_path == creds.client_key_path
    assert again.host_public_key == creds.host_public_key
    assert again.host_private_key == ""
    await restarted.remove(state)
    assert not creds.directory.exists()
    assert restarted.list_directories() == []


async def test_remove_is_idempotent(store):
    creds = await store.create("carol")
    await store.remove(creds)
    await store.remove(creds)
    await store.remove(creds.to_state())
    await store.remove(None)
    await store.remove({})
    assert not creds.directory.exists()


@pytest.mark.parametrize("directory", ["/etc", "{root}", "{root}/../elsewhere", "{root}/a/b"])
async def test_remove_refuses_paths_outside_the_base_dir(store, directory, tmp_path):
    await store.create("dave")  # makes the base dir
    state = {"directory": directory.format(root=store.root), "client_public_key": "k", "host_public_key": "k"}
    with pytest.raises(ValueError, match="not a credentials directory"):
        await store.remove(state)
    assert store.root.is_dir()


def test_known_hosts_line(tmp_path):
    from multiplespawner.machines.credentials import ServerCredentials

    creds = ServerCredentials(directory=tmp_path, client_public_key="c", host_public_key="ssh-ed25519 AAAA")
    assert creds.known_hosts_line("127.0.0.1", 2222) == "[127.0.0.1]:2222 ssh-ed25519 AAAA\n"
    assert creds.known_hosts_line("m.example", 22) == "m.example ssh-ed25519 AAAA\n"


async def test_certificate_signed_by_the_hub_ca(tmp_path):
    ca = asyncssh.generate_private_key("ssh-ed25519")
    ca_file = tmp_path / "ca"
    ca.write_private_key(str(ca_file))
    store = CredentialStore(base_dir=str(tmp_path / "keys"), ca_key_file=str(ca_file), certificate_validity=600)
    creds = await store.create("erin", certificate_principals=["erin"])
    assert mode(creds.certificate_path) == 0o600
    cert = asyncssh.import_certificate(creds.certificate)
    assert cert.principals == ["erin"]
    assert cert.signing_key.public_data == ca.public_data
    assert cert.key.public_data == asyncssh.import_public_key(creds.client_public_key).public_data
    cert.validate(CERT_TYPE_USER, "erin")  # valid now, for this login
    with pytest.raises(ValueError):
        cert.validate(CERT_TYPE_USER, "mallory")
    assert store.from_state(creds.to_state()).certificate == creds.certificate
    # the tunnels and commands only, as "restrict,port-forwarding" on an authorized key
    assert cert.options == {"permit-port-forwarding": True}
    assert await store.ca_public_key() == ca.export_public_key().decode().strip()
    # a template's validity wins over the store's; no principals: no certificate
    short = await store.create("erin", certificate_principals=["erin"], certificate_validity=120)
    short_cert = asyncssh.import_certificate(short.certificate)
    assert short_cert._valid_before - short_cert._valid_after == 180  # 60 s backdated
    assert (await store.create("frank")).certificate == ""


async def test_a_certificate_needs_the_ca(store):
    with pytest.raises(ValueError, match="ca_key_file is not set"):
        await store.create("erin", certificate_principals=["erin"])
    with pytest.raises(ValueError, match="no hub CA"):
        await store.ca_public_key()


async def test_a_known_host_key_is_kept_and_none_generated(store):
    creds = await store.create("pool", host_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPool")
    assert creds.host_public_key == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPool"
    assert creds.host_private_key == ""
