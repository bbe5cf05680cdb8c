"""multiplespawner.mounts.sshfs without a server: the source's validation, the host key line,
the sshfs command line (no secret can reach it), error causes, mountinfo parsing, state."""

import inspect
import json
from pathlib import Path

import pytest

from multiplespawner.mounts.sshfs import (
    FSNAME_PREFIX,
    HOST_KEY_ALIAS,
    FoundMount,
    Mount,
    MountError,
    SFTPSource,
    check_marker,
    classify_error,
    find_mounts,
    find_stale,
    pinned_host_key,
    sshfs_argv,
)

KEY_BLOB = "AAAAC3NzaC1lZDI1NTE5AAAAIPJveT/KGjC4KtmCybAZWGeibFqGrat7WtlB6wUPtAhc"


@pytest.mark.parametrize("kwargs", [
    dict(user="ada", host="storage.example.org"),
    dict(user="ada.l_1", host="127.0.0.5", port=2222, path="/srv/home/ada"),
    dict(user="svc$", host="files-1", port=65535, path=""),
    dict(user="a", host="h", port=1, path="/"),
])
def test_valid_sources(kwargs):
    source = SFTPSource(**kwargs)
    assert SFTPSource.from_state(json.loads(json.dumps(source.to_state()))) == source


@pytest.mark.parametrize("kwargs, words", [
    (dict(user="-oProxyCommand=x", host="h"), "start with '-'"),
    (dict(user="ada", host="-oProxyCommand=x"), "start with '-'"),
    (dict(user="ada", host="h", path="-x"), "start with '-'"),
    (dict(user="a da", host="h"), "whitespace"),
    (dict(user="ada", host="h\tx"), "whitespace"),
    (dict(user="ada", host="h", path="/a b"), "whitespace"),
    (dict(user="ada", host="h", path="/a\nb"), "whitespace or control"),
    (dict(user="ada\x00", host="h"), "control"),
    (dict(user="ada", host="h", path="/a\x7fb"), "control"),
    (dict(user="ada@evil", host="h"), "user"),
    (dict(user="ada:x", host="h"), "user"),
    (dict(user="", host="h"), "user"),
    (dict(user="ada", host=""), "host"),
    (dict(user="ada", host="h/x"), "host"),
    (dict(user="ada", host="h:22"), "host"),
    (dict(user="ada", host="a..b"), "host"),
    (dict(user="ada", host="h", port=0), "port"),
    (dict(user="ada", host="h", port=65536), "port"),
    (dict(user="ada", host="h", port="22"), "port"),
    (dict(user="ada", host="h", port=True), "port"),
    (dict(user="ada", host="h", path="relative/dir"), "absolute"),
    (dict(user=1, host="h"), "string"),
])
def test_invalid_sources_are_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        SFTPSource(**kwargs)


def test_source_names_itself_without_secrets():
    source = SFTPSource("ada", "storage.example.org", 2222, "/srv/ada")
    assert str(source) == "ada@storage.example.org:2222:/srv/ada"
    assert source.remote() == "ada@storage.example.org:/srv/ada"


@pytest.mark.parametrize("marker", ["a", "hub1-ada-server", "x.y_z-1", "A" * 64])
def test_markers(marker):
    assert check_marker(marker) == marker


@pytest.mark.parametrize("marker", ["", "-a", ".a", "a,b", "a b", "a/b", "a=b", "A" * 65, None])
def test_bad_markers(marker):
    with pytest.raises(ValueError):
        check_marker(marker)


@pytest.mark.parametrize("line", [
    f"[127.0.0.3]:2222 ssh-ed25519 {KEY_BLOB}",
    f"storage.example.org ssh-ed25519 {KEY_BLOB} a comment",
    f"ssh-ed25519 {KEY_BLOB}",
    f"ssh-ed25519 {KEY_BLOB}\n",
])
def test_pinned_host_key_takes_the_key_of_a_line(line):
    assert pinned_host_key(line) == f"ssh-ed25519 {KEY_BLOB}"


@pytest.mark.parametrize("line", [
    "", "host", f"@cert-authority * ssh-ed25519 {KEY_BLOB}", f"@revoked * ssh-ed25519 {KEY_BLOB}",
    f"h ssh-ed25519 {KEY_BLOB}\nh2 ssh-ed25519 {KEY_BLOB}", "h ssh-ed25519 not-base64!", "h ssh-ed25519 AAAA",
    f"h notakeytype {KEY_BLOB}",
])
def test_bad_pinned_host_keys(line):
    with pytest.raises(ValueError):
        pinned_host_key(line)


def argv_for(**kwargs):
    defaults = dict(agent_socket=Path("/run/m/sshfs-x-1/agent.sock"),
                    known_hosts_file=Path("/run/m/sshfs-x-1/known_hosts"), marker="hub1-ada")
    return sshfs_argv(SFTPSource("ada", "storage.example.org", 2222, "/srv/ada"), Path("/srv/mnt/ada"),
                      **{**defaults, **kwargs})


def options(argv):
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "-o"]


def test_argv_pins_the_host_key_and_uses_only_the_agent():
    argv = argv_for()
    assert argv[:4] == ["sshfs", "-f", "ada@storage.example.org:/srv/ada", "/srv/mnt/ada"]
    assert argv[4:8] == ["-p", "2222", "-F", "none"]
    opts = options(argv)
    for expected in ["IdentityAgent=/run/m/sshfs-x-1/agent.sock", "IdentitiesOnly=no", "IdentityFile=none",
                     "BatchMode=yes", "StrictHostKeyChecking=yes", "UserKnownHostsFile=/run/m/sshfs-x-1/known_hosts",
                     "GlobalKnownHostsFile=/dev/null", f"HostKeyAlias={HOST_KEY_ALIAS}", "UpdateHostKeys=no",
                     "PasswordAuthentication=no", "reconnect", f"fsname={FSNAME_PREFIX}hub1-ada"]:
        assert expected in opts
    assert any(o.startswith("ServerAliveInterval=") for o in opts)
    assert any(o.startswith("ServerAliveCountMax=") for o in opts)
    for absent in ("ro", "allow_other", "default_permissions"):
        assert absent not in opts
    assert not any(o.startswith(("uid=", "gid=")) for o in opts)


def test_argv_options_on_request():
    opts = options(argv_for(readonly=True, uid=1234, gid=2345, allow_other=True, connect_timeout=7))
    for expected in ["ro", "uid=1234", "gid=2345", "allow_other", "default_permissions", "ConnectTimeout=7"]:
        assert expected in opts


def test_argv_builder_cannot_receive_a_key():
    """The command line is built from paths and names only: there is no parameter a key could
    travel through, and every argument is one the function composed from its inputs."""
    params = set(inspect.signature(sshfs_argv).parameters)
    assert params == {"source", "target", "agent_socket", "known_hosts_file", "marker", "readonly", "uid", "gid",
                      "allow_other", "connect_timeout", "sshfs"}
    argv = argv_for(readonly=True, uid=1, gid=1, allow_other=True)
    assert not [a for a in argv if "PRIVATE KEY" in a or "BEGIN" in a]


@pytest.mark.parametrize("socket", ["/run/a,b/agent.sock", "/run/a b/agent.sock", "/run/a\nb/agent.sock"])
def test_argv_refuses_paths_that_would_split_options(socket):
    with pytest.raises(MountError):
        argv_for(agent_socket=Path(socket))


@pytest.mark.parametrize("stderr, cause", [
    ("root@127.0.0.10: Permission denied (publickey).\nread: Connection reset by peer\n", "auth refused"),
    ("@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.\n",
     "host key mismatch"),
    ("No ED25519 host key is known for sshfs-mount-storage and you have requested strict checking.\n"
     "Host key verification failed.\nread: Connection reset by peer\n", "host key mismatch"),
    ("ssh: connect to host 127.0.0.10 port 40041: Connection refused\nread: Connection reset by peer\n",
     "connection refused"),
    ("ssh: connect to host 10.0.0.1 port 22: Connection timed out\n", "timeout"),
    ("ssh: Could not resolve hostname nowhere: Name or service not known\n", "unknown host"),
    ("fuse: failed to open /dev/fuse: Permission denied\n", "may not use FUSE"),
    ("fusermount3: option allow_other only allowed if 'user_allow_other' is set in /etc/fuse.conf\n",
     "user_allow_other"),
    ("", "without a message"),
    ("first line\nsomething \x1bodd\n\n", "something ?odd"),
])
def test_error_causes(stderr, cause):
    assert cause in classify_error(stderr)


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/root rw
45 22 0:40 / /tmp/m/a rw,nosuid,nodev,relatime - fuse.sshfs sshfs-hub1-ada rw,user_id=0,group_id=0
46 22 0:41 / /tmp/m/with\\040space rw,nosuid,nodev,relatime - fuse.sshfs sshfs-hub1-bob rw,user_id=0,group_id=0
47 22 0:42 / /tmp/m/other rw,nosuid,nodev,relatime - fuse.sshfs root@host:/x rw,user_id=0,group_id=0
48 22 0:43 / /tmp/m/c rw,nosuid,nodev,relatime - fuse.sshfs sshfs-hub2-carl rw,user_id=0,group_id=0
49 22 0:44 / /tmp/m/d rw,relatime - tmpfs sshfs-hub1-fake rw
"""


def test_find_mounts_and_stale_from_mountinfo(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    assert find_mounts("hub1-", str(info)) == [FoundMount(Path("/tmp/m/a"), "hub1-ada"),
                                               FoundMount(Path("/tmp/m/with space"), "hub1-bob")]
    assert len(find_mounts("", str(info))) == 3
    assert find_stale("hub1-", keep={"hub1-bob"}, mountinfo=str(info)) == [Path("/tmp/m/a")]
    assert find_stale("hub2-", mountinfo=str(info)) == [Path("/tmp/m/c")]
    with pytest.raises(ValueError):
        find_stale("", mountinfo=str(info))


def test_mount_state_round_trip():
    m = Mount(source=SFTPSource("ada", "h", 22, "/x"), target=Path("/srv/mnt/ada"), marker="hub1-ada",
              private_dir=Path("/tmp/sshfs-hub1-ada-abc"), agent_pid=123, sshfs_pid=456, as_user="ada")
    state = json.loads(json.dumps(m.to_state()))
    back = Mount.from_state(state)
    assert back.to_state() == m.to_state()
    assert back.agent_socket == Path("/tmp/sshfs-hub1-ada-abc/agent.sock")
    with pytest.raises(ValueError):
        Mount.from_state({**state, "marker": "-bad"})
