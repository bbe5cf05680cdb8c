"""Cloud machines through Apache libcloud (EC2, OpenStack and other compute drivers).

The provider is built with the driver and its credentials (operator configuration, never the
catalogue)::

    LibcloudProvider(driver="ec2", key="AKIA...", secret="...", driver_kwargs={"region": "eu-west-1"})

A deployment chooses what to boot::

    {"name": "cloud-vm", "provider": "libcloud",
     "image": "ami-0123456789abcdef0",     # image id (required)
     "location": "eu-west-1a",             # optional: location/zone name or id
     "sizes": ["t3.micro", "t3.small"],    # optional: only these size ids may be chosen
     "address": "public",                  # optional: "public" (default) or "private" IPs
     "ssh_port": 22,                       # optional
     "create_timeout": 600,                # optional: seconds until running with an address
     "node_options": {"ex_security_groups": ["notebooks"]}}  # optional: passed to create_node

The size is the smallest the driver offers (restricted to ``sizes`` if given, and to the
image's CPU architecture where both are known) that has at least the chosen CPUs, memory and
GPUs: fewest GPUs, then fewest CPUs, then least memory, then lowest price (:func:`choose_size`).

The machine gets its keys through cloud-init user data (:func:`cloud_init_user_data`): the
account ``spec.ssh_user`` with ``spec.authorized_key`` only and passwordless sudo (the
configurer prepares the machine through it), and ``spec.host_key_private`` as its only SSH host
key, so the pin exists before the first connection. Labels go into the node's tags/metadata
(EC2 tags, OpenStack server metadata), which is how :meth:`LibcloudProvider.list` and
:meth:`LibcloudProvider.destroy` find nodes again.

Every libcloud call runs in the provider's bounded thread pool; each pool thread has its own
driver object (libcloud connections are not shared between threads).
"""

from __future__ import annotations

import logging
import math
import threading

from .base import LABEL_PREFIX, Machine, MachineSpec, Provider, ProviderError, wait_for_ssh
from .identity import (
    HUB_LABEL, check_labels, cloud_init_user_data, internal_label, machine_labels, public_host_key, spec_labels,
)

#: ``size.extra`` keys drivers use for the number of virtual CPUs and of GPUs
_CPU_KEYS = ("vcpu", "vcpus", "cpu", "cpus", "guestCpus", "numberOfCores")
_GPU_KEYS = ("gpu", "gpus", "gpu_count", "gpuCount")
_ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "arm64": "arm64", "aarch64": "arm64"}


# -- choosing a size -------------------------------------------------------------------------


def _number(value) -> float | None:
    try:
        number = float(str(value).split()[0])
    except (ValueError, IndexError):
        return None
    return number if math.isfinite(number) else None


def size_cpus(size) -> float | None:
    """Virtual CPUs of a libcloud ``NodeSize`` (None if the driver does not say)."""
    for value in (getattr(size, "vcpus", None), *((size.extra or {}).get(k) for k in _CPU_KEYS)):
        if value is not None and _number(value) is not None:
            return _number(value)
    return None


def size_gpus(size) -> int:
    """GPUs of a libcloud ``NodeSize`` (0 if the driver lists none)."""
    for key in _GPU_KEYS:
        number = _number((size.extra or {}).get(key))
        if number is not None:
            return int(number)
    return 0


def size_architecture(size) -> str | None:
    """``x86_64`` or ``arm64`` if the driver's size data says so, else None."""
    extra = size.extra or {}
    if extra.get("architecture") or extra.get("arch"):
        return _ARCHITECTURES.get(str(extra.get("architecture") or extra.get("arch")).lower())
    processor = str(extra.get("physicalProcessor", ""))  # EC2's pricing data
    if "Graviton" in processor:
        return "arm64"
    if "Intel" in processor or "AMD" in processor:
        return "x86_64"
    return None


def image_architecture(image) -> str | None:
    """``x86_64`` or ``arm64`` if the driver's image data says so, else None."""
    return _ARCHITECTURES.get(str((image.extra or {}).get("architecture", "")).lower())


def choose_size(sizes, resources, allowed=None, architecture=None):
    """The smallest size with at least ``resources``' CPUs, memory (MiB) and GPUs.

    Smallest means fewest GPUs, then fewest CPUs, then least memory, then lowest known price,
    then id (so the choice is stable). ``allowed`` (size ids) restricts the candidates, and so
    does ``architecture`` (the image's) for sizes whose architecture is known. Sizes whose
    CPU count or memory the driver does not report are not chosen. Raises ProviderError naming
    what was asked when nothing fits.
    """
    candidates = []
    for size in sizes:
        if allowed and size.id not in allowed:
            continue
        if architecture and size_architecture(size) not in (None, architecture):
            continue
        cpus, ram = size_cpus(size), _number(size.ram)
        if cpus is None or ram is None:
            continue
        gpus = size_gpus(size)
        if cpus >= resources.cpu and ram >= resources.memory_mb and gpus >= resources.gpus:
            price = _number(size.price)  # drivers report an unknown price as None or 0
            candidates.append(((gpus, cpus, ram, price if price else math.inf, size.id), size))
    if not candidates:
        restriction = f" among {', '.join(allowed)}" if allowed else ""
        restriction += f" for {architecture} images" if architecture else ""
        raise ProviderError(
            f"no machine size{restriction} has {resources.cpu:g} CPUs, {resources.memory_mb} MiB "
            f"of memory and {resources.gpus} GPUs; choose fewer resources"
        )
    return min(candidates, key=lambda c: c[0])[1]


def node_tags(node) -> dict:
    """A node's tags (EC2) or metadata (OpenStack) as a dict."""
    extra = node.extra or {}
    return dict(extra.get("tags") or extra.get("metadata") or {})


# -- the provider ------------------------------------------------------------------------------


class LibcloudProvider(Provider):
    """Machines as nodes of a libcloud compute driver.

    ``driver``: a libcloud compute provider name (``"ec2"``, ``"openstack"``, ...).
    ``key``/``secret``: the driver's credentials. ``driver_kwargs``: further driver arguments
    (``region``, ``host``/``port``/``secure`` for a private endpoint, ``ex_force_auth_url``...).
    ``poll_interval``: seconds between state checks while a node boots.
    """

    name = "libcloud"

    def __init__(self, driver: str, key: str, secret: str | None = None, driver_kwargs: dict | None = None,
                 poll_interval: float = 5, log: logging.Logger | None = None):
        from libcloud.compute.providers import get_driver

        try:
            self._driver_class = get_driver(driver)
        except AttributeError as e:
            raise ValueError(f"libcloud has no compute driver {driver!r}") from e
        self.driver_name = driver
        self._credentials = (key, secret)
        self.driver_kwargs = dict(driver_kwargs or {})
        self.poll_interval = poll_interval
        self.log = log or logging.getLogger(__name__)
        self._local = threading.local()

    def __repr__(self):  # never show the credentials
        return f"<LibcloudProvider driver={self.driver_name!r}>"

    # -- blocking helpers (run in the provider's thread pool) --------------------------------

    def _driver(self):
        """This thread's driver object."""
        if getattr(self._local, "driver", None) is None:
            key, secret = self._credentials
            args = (key,) if secret is None else (key, secret)
            self._local.driver = self._driver_class(*args, **self.driver_kwargs)
        return self._local.driver

    def _our_nodes(self, selector: dict) -> list:
        """Nodes (not terminated) whose tags carry every ``selector`` key with its value."""
        from libcloud.compute.types import NodeState

        return [
            node for node in self._driver().list_nodes()
            if node.state != NodeState.TERMINATED
            and all(node_tags(node).get(k) == v for k, v in selector.items())
        ]

    def _address(self, node, deployment: dict) -> str | None:
        ips = node.public_ips if deployment.get("address", "public") == "public" else node.private_ips
        return next((ip for ip in ips or [] if ip), None)

    def _create_blocking(self, spec: MachineSpec, host_public_key: str) -> Machine:
        deployment = spec.deployment
        driver = self._driver()
        if not deployment.get("image"):
            raise ProviderError(f"deployment {deployment.get('name')!r} names no image")
        try:
            image = driver.get_image(deployment["image"])
        except Exception as e:  # drivers raise IndexError, KeyError or their own errors
            raise ProviderError(f"the cloud has no image {deployment['image']!r}: {e}") from e
        location = None
        if deployment.get("location"):
            location = next(
                (loc for loc in driver.list_locations() if deployment["location"] in (loc.name, str(loc.id))), None
            )
            if location is None:
                raise ProviderError(f"the cloud has no location {deployment['location']!r}")
        size = choose_size(driver.list_sizes(location=location) if location else driver.list_sizes(),
                           spec.resources, deployment.get("sizes"), image_architecture(image))
        self.log.info("Creating %s node %s: image %s, size %s", self.driver_name, spec.name, image.id, size.id)
        user_data = cloud_init_user_data(spec.ssh_user, spec.authorized_key, spec.host_key_private, host_public_key)
        port = int(deployment.get("ssh_port", 22))
        tags = {**machine_labels(spec, host_public_key), internal_label("ssh-port"): str(port)}
        try:
            node = driver.create_node(
                name=spec.name, image=image, size=size, location=location,
                ex_userdata=user_data, ex_metadata=tags, **deployment.get("node_options", {}),
            )
            address = self._wait_for_address(node, deployment)
        except BaseException as e:
            # the cloud may have made the node even if the call failed: find it by its name tag
            self._destroy_named_blocking(spec.name)
            if isinstance(e, ProviderError):
                raise
            if isinstance(e, Exception):
                raise ProviderError(f"{self.driver_name} could not create node {spec.name}: {e}") from e
            raise
        return Machine(
            id=node.id, provider=self.name, host=address, port=port,
            ssh_user=spec.ssh_user, host_public_key=host_public_key, labels=dict(spec.labels),
        )

    def _wait_for_address(self, node, deployment: dict) -> str:
        """Wait until ``node`` runs and has an address of the deployment's kind."""
        timeout = float(deployment.get("create_timeout", 600))
        interface = "public_ips" if deployment.get("address", "public") == "public" else "private_ips"
        try:
            ((running, addresses),) = self._driver().wait_until_running(
                [node], wait_period=self.poll_interval, timeout=timeout, ssh_interface=interface
            )
        except Exception as e:
            raise ProviderError(
                f"node {node.name} was not running with a {interface.replace('_ips', '')} address "
                f"within {timeout:.0f}s: {e}"
            ) from e
        return addresses[0]

    def _destroy_named_blocking(self, name: str) -> None:
        for node in self._our_nodes({internal_label("name"): name}):
            self.log.info("Destroying %s node %s (%s) after a failed create", self.driver_name, name, node.id)
            node.destroy()

    def _destroy_blocking(self, machine_id: str) -> bool:
        nodes = [n for n in self._our_nodes({}) if n.id == machine_id]
        if not nodes:
            return False
        node = nodes[0]
        if not any(k.startswith(LABEL_PREFIX + ".") for k in node_tags(node)):
            raise ProviderError(f"node {machine_id} was not made by this provider; not destroying it")
        if not node.destroy():
            raise ProviderError(f"{self.driver_name} refused to destroy node {machine_id}")
        return True

    def _list_blocking(self, hub_id: str) -> list[Machine]:
        machines = []
        for node in self._our_nodes({HUB_LABEL: hub_id}):
            tags = node_tags(node)
            machines.append(
                Machine(
                    id=node.id, provider=self.name,
                    host=next(iter(node.public_ips or node.private_ips or []), ""),
                    port=int(tags.get(internal_label("ssh-port"), 22)),
                    ssh_user=tags.get(internal_label("ssh-user"), ""),
                    host_public_key=tags.get(internal_label("host-key"), ""), labels=spec_labels(tags),
                )
            )
        return machines

    # -- the Provider interface ---------------------------------------------------------------

    async def create(self, spec: MachineSpec) -> Machine:
        """Create the node and return once it runs with an address (not yet reachable by SSH)."""
        check_labels(spec.labels)
        host_public_key = public_host_key(spec.host_key_private)
        machine = await self.create_in_thread(self._create_blocking, self._destroy_blocking, spec, host_public_key)
        self.log.info("%s node %s is %s at %s", self.driver_name, spec.name, machine.id, machine.host)
        return machine

    async def wait_ready(self, machine: Machine, timeout: float) -> None:
        await wait_for_ssh(machine.host, machine.port, machine.host_public_key, timeout)

    async def destroy(self, machine_id: str) -> None:
        if await self.run_blocking(self._destroy_blocking, machine_id):
            self.log.info("Destroyed %s node %s", self.driver_name, machine_id)

    async def list(self, hub_id: str) -> list[Machine]:
        return await self.run_blocking(self._list_blocking, hub_id)
