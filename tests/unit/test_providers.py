"""Provider pieces that need no engine or cloud: size choice, cloud-init, labels, registry."""

import asyncssh
import pytest
import yaml
from libcloud.compute.base import NodeSize
from libcloud.compute.providers import get_driver

from multiplespawner.providers import MachineSpec, Provider, ProviderError, Resources
from multiplespawner.providers.base import LABEL_PREFIX, Machine
from multiplespawner.providers.docker import DockerProvider
from multiplespawner.providers.identity import (
    HUB_LABEL, check_labels, cloud_init_user_data, internal_label, machine_labels, public_host_key, spec_labels,
)
from multiplespawner.providers.libcloud import (
    LibcloudProvider, choose_size, image_architecture, size_architecture, size_cpus,
    size_gpus,
)
from multiplespawner.providers.registry import available, make_provider, provider_class


@pytest.fixture(scope="module")
def ec2_sizes():
    """The EC2 driver's real size list (libcloud's bundled data; no network call)."""
    return get_driver("ec2")("key", "secret", region="us-east-1").list_sizes()


def size(id, ram, price=None, **extra):
    return NodeSize(id=id, name=id, ram=ram, disk=10, bandwidth=None, price=price, driver=None, extra=extra)


def key_of(s):
    return (size_gpus(s), size_cpus(s), s.ram, s.price or float("inf"), s.id)


# -- choose_size ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "resources",
    [Resources(0.5, 512), Resources(1, 1024), Resources(2, 4096), Resources(4, 16384),
     Resources(8, 32768, gpus=1), Resources(16, 65536, gpus=4)],
)
def test_ec2_choice_fits_and_nothing_smaller_does(ec2_sizes, resources):
    chosen = choose_size(ec2_sizes, resources)
    assert size_cpus(chosen) >= resources.cpu
    assert chosen.ram >= resources.memory_mb
    assert size_gpus(chosen) >= resources.gpus
    fitting = [
        s for s in ec2_sizes
        if size_cpus(s) >= resources.cpu and s.ram >= resources.memory_mb and size_gpus(s) >= resources.gpus
    ]
    smallest = min(fitting, key=key_of)
    assert (size_gpus(chosen), size_cpus(chosen), chosen.ram) == (size_gpus(smallest), size_cpus(smallest), smallest.ram)


def test_ec2_known_choices(ec2_sizes):
    assert choose_size(ec2_sizes, Resources(1, 1024)).id == "t2.micro"
    assert choose_size(ec2_sizes, Resources(0.5, 512)).id == "t2.nano"
    gpu = choose_size(ec2_sizes, Resources(4, 8192, gpus=1))
    assert size_gpus(gpu) == 1 and size_cpus(gpu) == 4
    # no GPU wasted on a CPU-only request, however cheap the GPU size is
    assert size_gpus(choose_size(ec2_sizes, Resources(4, 16384))) == 0


def test_ordering_gpus_then_cpus_then_memory_then_price():
    sizes = [
        size("gpu-small", 4096, 0.01, vcpu="2", gpu="1"),
        size("cpu-big-mem", 16384, 0.02, vcpu="2"),
        size("cpu-4", 4096, 0.01, vcpu="4"),
        size("cpu-2-a", 4096, 0.05, vcpu="2"),
        size("cpu-2-b", 4096, 0.03, vcpu="2"),
        size("cpu-2-unpriced", 4096, 0.0, vcpu="2"),
    ]
    assert choose_size(sizes, Resources(2, 2048)).id == "cpu-2-b"
    assert choose_size(sizes, Resources(2, 8192)).id == "cpu-big-mem"
    assert choose_size(sizes, Resources(3, 1024)).id == "cpu-4"
    assert choose_size(sizes, Resources(1, 1024, gpus=1)).id == "gpu-small"
    assert choose_size(sizes, Resources(2, 2048), allowed=["cpu-2-a", "cpu-4"]).id == "cpu-2-a"


def test_architecture_of_the_image_is_respected(ec2_sizes):
    for resources in (Resources(2, 4096), Resources(1, 1024), Resources(4, 8192, gpus=1)):
        assert size_architecture(choose_size(ec2_sizes, resources, architecture="x86_64")) == "x86_64"
        assert size_architecture(choose_size(ec2_sizes, resources, architecture="arm64")) == "arm64"
    sizes = [size("arm", 4096, 0.01, vcpu="2", physicalProcessor="AWS Graviton2 Processor"),
             size("x86", 4096, 0.02, vcpu="2", physicalProcessor="Intel Xeon"),
             size("unknown-arch", 4096, 0.03, vcpu="2")]
    assert choose_size(sizes, Resources(2, 2048)).id == "arm"
    assert choose_size(sizes, Resources(2, 2048), architecture="x86_64").id == "x86"
    assert choose_size(sizes[::2], Resources(2, 2048), architecture="x86_64").id == "unknown-arch"
    with pytest.raises(ProviderError, match="for x86_64 images"):
        choose_size(sizes[:1], Resources(2, 2048), architecture="x86_64")
    image = type("Image", (), {"extra": {"architecture": "aarch64"}})()
    assert image_architecture(image) == "arm64"


def test_driver_specific_cpu_fields_and_unknowns():
    openstack = NodeSize("m1", "m1", 2048, 20, None, 0, None, extra={})
    openstack.vcpus = 2
    assert size_cpus(openstack) == 2
    assert size_cpus(size("gce", 3840, guestCpus=1)) == 1
    assert size_cpus(size("azure", 3584, numberOfCores=1)) == 1
    assert size_cpus(size("na", 1024, vcpu="NA")) is None
    assert size_gpus(size("na", 1024, gpu="NA")) == 0
    # a size that does not say how many CPUs it has is never chosen
    assert choose_size([size("unknown", 1 << 20), size("known", 2048, vcpu="1")], Resources(1, 1024)).id == "known"


def test_nothing_fits_says_what_was_asked(ec2_sizes):
    with pytest.raises(ProviderError, match="no machine size has 1024 CPUs, 1024 MiB"):
        choose_size(ec2_sizes, Resources(1024, 1024))
    with pytest.raises(ProviderError, match="among t2.micro"):
        choose_size(ec2_sizes, Resources(4, 1024), allowed=["t2.micro"])


# -- cloud-init ------------------------------------------------------------------------------


def test_cloud_init_user_data_carries_exactly_the_given_keys():
    host = asyncssh.generate_private_key("ssh-ed25519")
    host_private = host.export_private_key().decode()
    host_public = public_host_key(host_private)
    text = cloud_init_user_data("hubadmin", "ssh-ed25519 AAAAclient hub", host_private, host_public)
    assert text.startswith("#cloud-config\n")
    config = yaml.safe_load(text)
    assert config["ssh_keys"] == {"ed25519_private": host_private.strip() + "\n", "ed25519_public": host_public}
    assert config["ssh_deletekeys"] is True and config["ssh_genkeytypes"] == []
    (user,) = config["users"]  # no "default": the image's default user gets no key
    assert user["name"] == "hubadmin"
    assert user["ssh_authorized_keys"] == ["ssh-ed25519 AAAAclient hub"]
    assert user["lock_passwd"] is True and config["ssh_pwauth"] is False and config["disable_root"] is True


def test_cloud_init_key_types():
    rsa = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
    text = cloud_init_user_data("u", "k", rsa.export_private_key().decode(), public_host_key(rsa.export_private_key().decode()))
    assert set(yaml.safe_load(text)["ssh_keys"]) == {"rsa_private", "rsa_public"}
    with pytest.raises(ProviderError, match="cannot install"):
        cloud_init_user_data("u", "k", "x", "ssh-dss AAAA")


# -- labels and host keys --------------------------------------------------------------------


def test_labels_round_trip_and_validation():
    labels = {HUB_LABEL: "hub1", f"{LABEL_PREFIX}.user": "alice", f"{LABEL_PREFIX}.server": ""}
    check_labels(labels)
    spec = MachineSpec("m", {}, Resources(), "admin", "k", "h", labels)
    stored = machine_labels(spec, "ssh-ed25519 AAAA")
    assert stored[internal_label("host-key")] == "ssh-ed25519 AAAA"
    assert stored[internal_label("ssh-user")] == "admin"
    assert spec_labels({**stored, "com.other": "x"}) == labels
    for bad in ({f"{LABEL_PREFIX}.user": "a"}, {HUB_LABEL: ""}, {HUB_LABEL: "h", "user": "a"},
                {HUB_LABEL: "h", internal_label("host-key"): "x"}, {HUB_LABEL: "h", f"{LABEL_PREFIX}.n": 3}):
        with pytest.raises(ProviderError):
            check_labels(bad)


def test_public_host_key():
    key = asyncssh.generate_private_key("ssh-ed25519", comment="with comment")
    public = public_host_key(key.export_private_key().decode())
    assert public == " ".join(key.export_public_key().decode().split()[:2])
    with pytest.raises(ProviderError, match="not a valid"):
        public_host_key("-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n-----END OPENSSH PRIVATE KEY-----\n")
    encrypted = key.export_private_key("pkcs8-pem", passphrase="secret").decode()
    with pytest.raises(ProviderError):
        public_host_key(encrypted)


# -- registry and constructors ---------------------------------------------------------------


def test_registry():
    assert {"docker", "libvirt", "libcloud"} <= set(available())
    assert provider_class("docker") is DockerProvider
    assert provider_class("libcloud") is LibcloudProvider
    assert all(issubclass(provider_class(n), Provider) for n in ("docker", "libcloud"))
    with pytest.raises(LookupError, match="unknown machine provider 'nope'; known: docker"):
        provider_class("nope")
    provider = make_provider("libcloud", driver="ec2", key="AKID", secret="very-secret",
                             driver_kwargs={"region": "us-east-1"})
    assert "very-secret" not in repr(provider)


def test_constructor_checks():
    with pytest.raises(ValueError, match="loopback"):
        DockerProvider(publish_address="0.0.0.0")
    with pytest.raises(ValueError, match="loopback"):
        DockerProvider(publish_address="192.168.1.10")
    assert DockerProvider(publish_address="127.0.0.5").publish_address == "127.0.0.5"
    with pytest.raises(ValueError, match="no compute driver"):
        LibcloudProvider(driver="no-such-cloud", key="k")


# -- libvirt: the image's static network is the one the domain gets ------------------------------


def test_libvirt_domain_network_matches_the_images_static_address(tmp_path):
    """The VM image configures eth0 statically (no DHCP client at boot); the domain's user-mode
    network must give the guest exactly that address, gateway and DNS forwarder."""
    import ipaddress
    import json
    import xml.etree.ElementTree as ET

    from images.vm.build import GUEST
    from multiplespawner.providers.libvirt import QEMU_NS, _domain_xml

    stanza = {}
    for line in (GUEST / "interfaces").read_text().splitlines():
        words = line.split()
        if len(words) == 2 and words[0] in ("address", "gateway"):
            stanza[words[0]] = words[1]
    guest = ipaddress.ip_interface(stanza["address"])
    nameservers = [line.split()[1] for line in (GUEST / "resolv.conf").read_text().splitlines()
                   if line.startswith("nameserver ")]

    (tmp_path / "image.json").write_text(json.dumps({"cmdline": "root=/dev/vda"}))
    spec = MachineSpec(name="jh-x", deployment={"image": str(tmp_path)}, resources=Resources(),
                       ssh_user="hubadmin", authorized_key="", host_key_private="")
    machine = Machine(id="jh-x", provider="libvirt", host="127.0.0.1", port=2222, ssh_user="hubadmin",
                      host_public_key="ssh-ed25519 AAAA")
    root = ET.fromstring(_domain_xml(spec, machine, tmp_path, tmp_path, 1, 512))
    args = [a.get("value") for a in root.iter(f"{{{QEMU_NS}}}arg")]
    netdev = dict(part.split("=", 1) for part in args[args.index("-netdev") + 1].split(",")[1:])
    assert ipaddress.ip_network(netdev["net"]) == guest.network
    assert netdev["host"] == stanza["gateway"]
    assert [netdev["dns"]] == nameservers
    assert netdev["hostfwd"] == f"tcp:127.0.0.1:2222-{guest.ip}:22"


def test_a_machines_prepared_record_stays_out_of_state_and_identity():
    """Machine.prepared is for the configure step right after create: spawner state does not
    carry its package list, and a machine read back (or listed again) without it is the same."""
    machine = Machine(id="jh-x", provider="libvirt", host="127.0.0.1", port=2222, ssh_user="hubadmin",
                      host_public_key="ssh-ed25519 AAAA",
                      prepared={"notebook_env": {"packages": ["jupyterhub==5.5.0"] * 100}})
    state = machine.to_state()
    assert "prepared" not in state and machine.prepared  # to_state does not change the machine
    again = Machine.from_state(state)
    assert again.prepared == {} and again == machine
