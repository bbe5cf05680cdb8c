"""SSHTunnel against real OpenSSH servers on 127.0.0.x: host keys, forwards, reconnects."""

import asyncio
import os
import signal
import socket
import time

import asyncssh
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


async def remote_roundtrip(tunnel, port: int) -> str:
    """Connect from the machine to its 127.0.0.1:``port`` (a remote forward), send "hi", read 2 bytes."""
    result = await tunnel.run(
        "python3 -c 'import socket,sys; s=socket.create_connection((\"127.0.0.1\", int(sys.argv[1])), 5);"
        " s.settimeout(5); s.sendall(b\"hi\"); print(s.recv(2).decode())' " + str(port)
    )
    return result.stdout.strip()


async def take_port(port: int, timeout: float = 10) -> socket.socket:
    """Listen on 127.0.0.1:``port`` as soon as it is free (as another program might)."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
            return s
        except OSError:
            s.close()
            assert time.monotonic() < deadline, f"port {port} never became free"
            await asyncio.sleep(0.05)


async def eventually(predicate, timeout: float, message: str) -> float:
    """Wait until ``predicate()`` is true; return how long it took."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"{message} not within {timeout}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


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
        assert await remote_roundtrip(tunnel, remote_port) == "hi"
        sock = tunnel._conn.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert len(sshd.connections()) == 1
    finally:
        await tunnel.close()
        await tunnel.close()  # idempotent
        echo.close()
    await no_connections_left(sshd)
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


async def no_connections_left(sshd) -> None:
    """sshd's per-connection processes are gone (they exit a moment after the client closes)."""
    await eventually(lambda: sshd.connections() == [], 5, "sshd's connection processes gone")


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
    await no_connections_left(sshd)


async def test_trust_on_first_use_pins_the_key_of_an_unknown_machine(machine, sshd_factory, tmp_path):
    sshd, key_path = machine
    # known_hosts knows another machine, not this one: this one is unknown, so TOFU applies
    known = sshd_factory().write_known_hosts(tmp_path / "known_hosts")
    tunnel = SSHTunnel(target_for(sshd, key_path, known_hosts=str(known), trust_on_first_use=True))
    try:
        await tunnel.connect()
        assert tunnel.host_key == sshd.host_key
    finally:
        await tunnel.close()


async def test_trust_on_first_use_refuses_a_changed_key(machine, sshd_factory, tmp_path):
    """A machine known_hosts lists with another key has *changed* key: TOFU does not apply."""
    sshd, key_path = machine
    known = tmp_path / "known_hosts"
    known.write_text(f"[{sshd.host}]:{sshd.port} {sshd_factory().host_key}\n")
    tunnel = SSHTunnel(target_for(sshd, key_path, known_hosts=str(known), trust_on_first_use=True))
    with pytest.raises(HostKeyError) as info:
        await tunnel.connect()
    message = str(info.value)
    assert "Refusing to connect" in message and "the key changed" in message
    assert "trust_on_first_use applies only to machines known_hosts has no entry for" in message
    assert asyncssh.import_public_key(sshd.host_key).get_fingerprint() in message
    assert tunnel.host_key == ""  # nothing pinned
    await tunnel.close()
    await no_connections_left(sshd)


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


@pytest.mark.parametrize("trust", ["pinned", "first-use"])
async def test_host_key_changed_while_down_stops_reconnecting(machine, sshd_factory, tmp_path, trust):
    """A machine that comes back with another key is not trusted, even mid-session (also when
    its first key was trusted on first use: that key is pinned from then on)."""
    sshd, key_path = machine
    kwargs = {"host_key": sshd.host_key} if trust == "pinned" else {"trust_on_first_use": True}
    tunnel = SSHTunnel(target_for(sshd, key_path, **kwargs), reconnect_max_delay=0.5)
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


async def test_forwards_keep_their_ports_when_taken_during_an_outage(machine):
    """Ports never move: the proxy route and the notebook's hub API URL are built from them.

    While the connection is down (its sshd session killed, the listener frozen so that the
    reconnect waits), other programs take the hub-side port of the local forward and the
    machine-side port of the remote forward. After the machine is back the connection serves
    commands at once, the forwards wait for *their* ports, and come back on them once freed.
    """
    sshd, key_path = machine
    echo = await echo_server()
    echo_port = echo.sockets[0].getsockname()[1]
    tunnel = SSHTunnel(target_for(sshd, key_path, host_key=sshd.host_key), reconnect_max_delay=1)
    squatters = []
    try:
        await tunnel.connect()
        local = await tunnel.forward_local(0, echo_port)
        remote_port = await tunnel.forward_remote(0, "127.0.0.1", echo_port)
        os.kill(sshd.pid, signal.SIGSTOP)  # new connections wait in the listen queue
        try:
            assert await asyncio.to_thread(sshd.kill_connection) == 1
            await eventually(lambda: not tunnel.connected, 10, "loss noticed")
            squatters = [await take_port(local), await take_port(remote_port)]
        finally:
            os.kill(sshd.pid, signal.SIGCONT)
        await eventually(lambda: tunnel.connected, 15, "reconnected")
        assert (await tunnel.run("true")).exit_status == 0  # commands need no forward
        assert not await tunnel.wait_ready(2)
        assert "cannot be bound" in tunnel.forward_problem
        assert (tunnel.port_of("local"), tunnel.port_of("remote")) == (local, remote_port)
        for squatter in squatters:
            squatter.close()
        assert await tunnel.wait_ready(10), tunnel.forward_problem
        assert tunnel.forward_problem is None
        assert (tunnel.port_of("local"), tunnel.port_of("remote")) == (local, remote_port)
        assert await roundtrip(local) == b"ping"
        assert await remote_roundtrip(tunnel, remote_port) == "hi"
        assert len(sshd.connections()) == 1
    finally:
        for squatter in squatters:
            squatter.close()
        await tunnel.close()
        echo.close()


async def test_silently_hung_connection_is_replaced_within_the_keepalive_bound(machine):
    """sshd's session processes are frozen (no FIN, no RST: a network outage). Keepalives declare
    the connection dead between count_max and count_max + 1 intervals after it went silent and
    a new connection carries the local forward. The machine-side port of the remote forward is
    held by the frozen session until it goes away; then the forward is back on the same port."""
    sshd, key_path = machine
    interval, count_max = 1.0, 2
    bound = interval * (count_max + 1)
    echo = await echo_server()
    echo_port = echo.sockets[0].getsockname()[1]
    tunnel = SSHTunnel(
        target_for(sshd, key_path, host_key=sshd.host_key), keepalive_interval=interval,
        keepalive_count_max=count_max, reconnect_max_delay=0.5,
    )
    try:
        await tunnel.connect()
        local = await tunnel.forward_local(0, echo_port)
        remote_port = await tunnel.forward_remote(0, "127.0.0.1", echo_port)
        with sshd.paused_connection() as paused:
            assert len(paused) == 1
            # (the new connection follows the loss within milliseconds: watch for it, not the gap)
            replaced = await eventually(lambda: tunnel.reconnects == 1, bound + 5, "hung connection replaced")
            assert interval * count_max - 0.5 <= replaced <= bound + 2  # + time to connect under load
            assert await roundtrip(local) == b"ping"
            assert not await tunnel.wait_ready(1)
            assert f"remote forward port {remote_port}" in tunnel.forward_problem
        # the frozen session resumes, sees its connection closed, exits and frees the port
        assert await tunnel.wait_ready(15), tunnel.forward_problem
        assert await remote_roundtrip(tunnel, remote_port) == "hi"
        assert tunnel.port_of("local") == local
        await eventually(lambda: len(sshd.connections()) == 1, 10, "old session gone")
    finally:
        await tunnel.close()
        echo.close()
