"""A Docker container acting as a machine: sshd in a container of the ssh-machine image.

The container is what a VM would be for the rest of the suite: the hub reaches it only over SSH,
on a port Docker publishes on a loopback address (never on all interfaces), and Ansible
configures it like any other host. Built for tests, demos and single-host deployments.

What ``create`` does, in order (anything that fails removes the container before raising):

1. create the container (not started) from ``deployment["image"]`` with CPU and memory limits
   from the resource choice, the labels below, and ``22/tcp`` published on
   ``publish_address`` at a port Docker chooses;
2. copy the host key and the authorized key into ``/etc/machine/`` of the stopped container
   (``put_archive``): the private host key is never in the container's environment or
   command line, so ``docker inspect`` does not show it;
3. start it; the image's entrypoint installs the keys, creates ``spec.ssh_user`` and runs sshd;
4. read the published port.

Labels on the container: ``spec.labels`` plus the machine name, SSH user and public host key
(see :mod:`.identity`), so :meth:`DockerProvider.list` rebuilds every :class:`Machine` after a
hub restart.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import logging
import tarfile
import time

import docker
import docker.errors
import docker.types

from .base import LABEL_PREFIX, Machine, MachineSpec, Provider, ProviderError, wait_for_ssh
from .identity import HUB_LABEL, check_labels, internal_label, machine_labels, public_host_key, spec_labels

DEFAULT_IMAGE = "jupyterhub-multiplespawner/ssh-machine:current"
#: where the image's entrypoint looks for keys (see docs/images.md)
KEY_DIR = "/etc/machine"
SSH_PORT = "22/tcp"


def _key_archive(host_key_private: str, authorized_key: str) -> bytes:
    """A tar archive holding the two files the ssh-machine entrypoint reads from KEY_DIR."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text, mode in (
            ("ssh_host_ed25519_key", host_key_private.strip() + "\n", 0o600),
            ("authorized_keys", authorized_key.strip() + "\n", 0o600),  # read by root only
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class DockerProvider(Provider):
    """Machines as containers of an SSH-capable image on one Docker engine.

    ``base_url``: the engine's API (default: ``DOCKER_HOST`` or the local socket).
    ``default_image``: used when the deployment names no ``image``.
    ``publish_address``: the loopback address sshd's port is published on.

    Deployment options: ``image`` (an image prepared like ``images/recipes/ssh-machine``).
    Resources: ``cpu`` -> ``nano_cpus``, ``memory_mb`` -> ``mem_limit`` (swap not allowed
    beyond it), ``gpus`` -> a Docker device request for that many GPUs.
    """

    name = "docker"

    def __init__(
        self,
        base_url: str | None = None,
        default_image: str = DEFAULT_IMAGE,
        publish_address: str = "127.0.0.1",
        log: logging.Logger | None = None,
    ):
        if not ipaddress.ip_address(publish_address).is_loopback:
            raise ValueError(
                f"publish_address {publish_address!r} is not a loopback address: sshd of a "
                "container machine is published on 127.0.0.0/8 or ::1 only"
            )
        self.base_url = base_url
        self.default_image = default_image
        self.publish_address = publish_address
        self.log = log or logging.getLogger(__name__)
        self._client: docker.DockerClient | None = None

    # -- blocking helpers (run in the provider's thread pool) --------------------------------

    def _docker(self) -> docker.DockerClient:
        if self._client is None:
            if self.base_url:
                self._client = docker.DockerClient(base_url=self.base_url, timeout=60)
            else:
                self._client = docker.from_env(timeout=60)
        return self._client

    def _create_blocking(self, spec: MachineSpec, host_public_key: str) -> Machine:
        image = spec.deployment.get("image") or self.default_image
        labels = machine_labels(spec, host_public_key)
        kwargs = {}
        if spec.resources.gpus:
            kwargs["device_requests"] = [
                docker.types.DeviceRequest(count=spec.resources.gpus, capabilities=[["gpu"]])
            ]
        memory = f"{int(spec.resources.memory_mb)}m"
        try:
            container = self._docker().containers.create(
                image,
                name=spec.name,
                hostname=spec.name[:63],
                labels=labels,
                environment={"MACHINE_USER": spec.ssh_user},
                ports={SSH_PORT: (self.publish_address, None)},
                nano_cpus=int(spec.resources.cpu * 1e9),
                mem_limit=memory,
                memswap_limit=memory,
                detach=True,
                **kwargs,
            )
        except docker.errors.ImageNotFound as e:
            raise ProviderError(
                f"image {image!r} is not on the Docker engine; build it (python -m images build "
                f"ssh-machine) or fix the deployment's image: {e.explanation}"
            ) from e
        except docker.errors.APIError as e:
            raise ProviderError(f"Docker could not create container {spec.name}: {e.explanation}") from e
        try:
            container.put_archive(KEY_DIR, _key_archive(spec.host_key_private, spec.authorized_key))
            container.start()
            container.reload()
            bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(SSH_PORT)
            if not bindings:
                raise ProviderError(
                    f"container {spec.name} has no published SSH port (state "
                    f"{container.status}); log: {self._log_tail(container)}"
                )
            port = int(bindings[0]["HostPort"])
        except BaseException as e:
            self._remove_blocking(container.id)
            if isinstance(e, docker.errors.APIError):
                raise ProviderError(f"Docker could not start container {spec.name}: {e.explanation}") from e
            raise
        return Machine(
            id=container.id,
            provider=self.name,
            host=self.publish_address,
            port=port,
            ssh_user=spec.ssh_user,
            host_public_key=host_public_key,
            labels=dict(spec.labels),
        )

    @staticmethod
    def _log_tail(container, lines: int = 20) -> str:
        try:
            return container.logs(tail=lines).decode(errors="replace").strip() or "(empty)"
        except docker.errors.APIError:
            return "(unavailable)"

    def _remove_blocking(self, machine_id: str) -> bool:
        """Force-remove a container this suite labelled; False if it was already gone."""
        try:
            container = self._docker().containers.get(machine_id)
        except docker.errors.NotFound:
            return False
        if not any(k.startswith(LABEL_PREFIX + ".") for k in container.labels):
            raise ProviderError(f"container {machine_id} was not made by this provider; not removing it")
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as e:
            if e.status_code == 409 and "already in progress" in str(e.explanation):
                return True
            raise ProviderError(f"Docker could not remove container {machine_id}: {e.explanation}") from e
        return True

    def _state_blocking(self, machine_id: str) -> tuple[str, str]:
        """The container's status and its log tail ("missing" if it is gone)."""
        try:
            container = self._docker().containers.get(machine_id)
        except docker.errors.NotFound:
            return "missing", ""
        return container.status, self._log_tail(container)

    def _list_blocking(self, hub_id: str) -> list[Machine]:
        # ignore_removed: a container removed between the list call and its inspection
        # (a concurrent destroy) is gone, not an error
        containers = self._docker().containers.list(
            all=True, filters={"label": f"{HUB_LABEL}={hub_id}"}, ignore_removed=True
        )
        machines = []
        for c in containers:
            bindings = (c.attrs["NetworkSettings"]["Ports"] or {}).get(SSH_PORT) or []
            machines.append(
                Machine(
                    id=c.id,
                    provider=self.name,
                    host=bindings[0]["HostIp"] if bindings else self.publish_address,
                    port=int(bindings[0]["HostPort"]) if bindings else 0,
                    ssh_user=c.labels.get(internal_label("ssh-user"), ""),
                    host_public_key=c.labels.get(internal_label("host-key"), ""),
                    labels=spec_labels(c.labels),
                )
            )
        return machines

    # -- the Provider interface ---------------------------------------------------------------

    async def create(self, spec: MachineSpec) -> Machine:
        check_labels(spec.labels)
        host_public_key = public_host_key(spec.host_key_private)
        self.log.info("Creating container machine %s", spec.name)
        machine = await self.create_in_thread(self._create_blocking, self._remove_blocking, spec, host_public_key)
        self.log.info("Container machine %s is %s, sshd on %s:%s", spec.name, machine.id[:12],
                      machine.host, machine.port)
        return machine

    async def wait_ready(self, machine: Machine, timeout: float) -> None:
        """Wait for sshd with the pinned host key; fail early if the container stops."""
        probe = asyncio.ensure_future(wait_for_ssh(machine.host, machine.port, machine.host_public_key, timeout))
        try:
            while True:
                done, _ = await asyncio.wait({probe}, timeout=2)
                if done:
                    return probe.result()
                status, log_tail = await self.run_blocking(self._state_blocking, machine.id)
                if status not in ("created", "running"):
                    raise ProviderError(f"container {machine.id[:12]} is {status}; log: {log_tail}")
        finally:
            probe.cancel()

    async def destroy(self, machine_id: str) -> None:
        if await self.run_blocking(self._remove_blocking, machine_id):
            self.log.info("Removed container machine %s", machine_id[:12])

    async def list(self, hub_id: str) -> list[Machine]:
        return await self.run_blocking(self._list_blocking, hub_id)
