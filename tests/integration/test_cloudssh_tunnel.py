"""SSHTunnel against real OpenSSH servers on 127.0.0.x: host keys, forwards, reconnects."""

import asyncio
import socket
import time

import pytest

from cloudsshspawner.tunnel import HostKeyError, SSHTarget, SSHTunnel
from tests.fixtures.sshd import make_client_key


async def echo_server():
    async def handle(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def roundtrip(port: int, payload: bytes = b"ping") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.readexactly(len(payload)), 5)
    writer.close()
    return data


def target_for(sshd, key_path, **kwargs):
    return SSHTarget(host=sshd.host, port=sshd.port, username="root", key_path=str(key_path), **kwargs)


@pytest.fixture
def machine(sshd, ssh_client_key):
    key_path, public = ssh_client_key
    sshd.authorize("root", public)
    return sshd, key_path


async def test_pinned_key_local_and_remote_forward(machine):
    sshd, key_path = machine
    echo = await echo_server()
    echo_port = echo.sockets[0].getsockname()[1]
    tunnel = SSHTunnel(target_for(sshd, key_path, host_key=sshd.host_key))
    try:
        await tunnel.connect()
        assert tunnel.host_key == sshd.host_key
        local = await tunnel.forward_local(0, echo_port)
        assert await roundtrip(local) == b"ping"
        # remote forward: the machine connects to its 127.0.0.1:<port> and reaches our echo
        remote_port = await tunnel.forward_remote(0, "127.0.0.1", echo_port)
        result = await tunnel.run(
            "python3 -c 'import socket,sys; s=socket.create_connection((\"127.0.0.1\", int(sys.argv[1])));"
            " s.sendall(b\"hi\"); print(s.recv(2).decode())' " + str(remote_port)
        )
        assert result.stdout.strip() == "hi"
        sock = tunnel._conn.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert len(sshd.connections()) == 1
    finally:
        await tunnel.close()
        await tunnel.close()  # idempotent
        echo.close()
    await asyncio.sleep(0.3)
    assert sshd.connections() == []
    with pytest.raises(OSError):
        await roundtrip(local)


async def test_known_hosts_file_accepts_listed_key(machine, tmp_path):
    sshd, key_path = machine
    known = sshd.write_known_hosts(tmp_path / "known_hosts")
    tunnel = SSHTunnel(target_for(sshd, key_path, known_hosts=str(known)))
    try:
        await tunnel.connect()
        assert tunnel.host_key == sshd.host_key
    finally:
        await tunnel.close()


@pytest.mark.parametrize("how", ["pinned", "known_hosts", "unknown"])
async def test_untrusted_host_key_is_refused(machine, sshd_factory, tmp_path, how):
    sshd, key_path = machine
    other = sshd_factory()  # a different machine with a different host key
    kwargs = {}
    if how == "pinned":
        kwargs["host_key"] = other.host_key
    elif how == "known_hosts":
        (tmp_path / "known_hosts").write_text(f"[{sshd.host}]:{sshd.port} {other.host_key}\n")
        kwargs["known_hosts"] = str(tmp_path / "known_hosts")
    tunnel = SSHTunnel(target_for(sshd, key_path, **kwargs))
    with pytest.raises(HostKeyError) as info:
        await tunnel.connect()
    message = str(info.value)
    assert "Refusing to connect" in message and sshd.host in message
    assert "SHA256:" in message  # the offered key's fingerprint, for the operator
    await tunnel.close()
    assert sshd.connections() == []


async def test_trust_on_first_use_pins_the_key(machine, sshd_factory):
    sshd, key_path = machine
    tunnel = SSHTunnel(target_for(sshd, key_path, trust_on_first_use=True))
    try:
        await tunnel.connect()
        assert tunnel.host_key == sshd.host_key
    finally:
        await tunnel.close()


async def test_reconnects_on_same_ports_after_connection_killed(machine):
    sshd, key_path = machine
    echo = await echo_server()
    echo_port = echo.sockets[0].getsockname()[1]
    tunnel = SSHTunnel(
        target_for(sshd, key_path, host_key=sshd.host_key), keepalive_interval=1,
        keepalive_count_max=2, reconnect_max_delay=1,
    )
    try:
        await tunnel.connect()
        local = await tunnel.forward_local(0, echo_port)
        remote_port = await tunnel.forward_remote(0, "127.0.0.1", echo_port)
        [before] = sshd.connections()
        killed_at = time.monotonic()
        assert await asyncio.to_thread(sshd.kill_connection) == 1
        while True:
            try:
                if tunnel.connected and await roundtrip(local) == b"ping":
                    break
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                pass  # until the loss is noticed, new connections on the old link are closed
            assert time.monotonic() - killed_at < 10, "tunnel not back within 10 s"
            await asyncio.sleep(0.1)
        assert tunnel.reconnects == 1
        assert tunnel.port_of("local") == local and tunnel.port_of("remote") == remote_port
        [after] = sshd.connections()
        assert after.peer_port != before.peer_port
    finally:
        await tunnel.close()
        echo.close()


async def test_host_key_changed_while_down_stops_reconnecting(machine, sshd_factory, tmp_path):
    """A machine that comes back with another key is not trusted, even mid-session."""
    sshd, key_path = machine
    tunnel = SSHTunnel(
        target_for(sshd, key_path, host_key=sshd.host_key), reconnect_max_delay=0.5
    )
    await tunnel.connect()
    try:
        sshd.stop()
        impostor = sshd_factory(host=sshd.host, port=sshd.port)
        impostor.authorize("root", make_client_key(tmp_path, "unused")[1])
        deadline = time.monotonic() + 15
        while tunnel.failure is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert isinstance(tunnel.failure, HostKeyError)
        assert not await tunnel.wait_connected(0.1)
    finally:
        await tunnel.close()
