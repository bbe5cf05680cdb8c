"""DockerSpawner children: CPU and memory limits on the container, GPUs as a device request,
a lower CPU weight (``cpu_shares``) than the default unless the template sets one, and a
template's storage mounts as bind volumes."""

from __future__ import annotations

import inspect

from .base import ChildAdapter, CpuWeight, register


def with_cpu_shares(host_config: dict, shares: int) -> dict:
    """``host_config`` with ``cpu_shares`` set to ``shares`` unless it sets them itself."""
    return host_config if "cpu_shares" in host_config else {**host_config, "cpu_shares": shares}


@register
class DockerAdapter(ChildAdapter):
    adapts = "dockerspawner.dockerspawner:DockerSpawner"
    reformatted_kwargs = ChildAdapter.reformatted_kwargs + (
        "volumes", "read_only_volumes", "mounts", "name_template", "extra_create_kwargs", "extra_host_config",
    )

    def resource_kwargs(self, choice) -> dict:
        """GPUs are added to the template's ``extra_host_config`` as a Docker device request."""
        kwargs = super().resource_kwargs(choice)
        gpus = choice.resources.get("gpus")
        if gpus:
            extra = dict(choice.template.spawner_kwargs.get("extra_host_config", {}))
            extra["device_requests"] = [{"Driver": "", "Count": int(gpus), "Capabilities": [["gpu"]]}]
            kwargs["extra_host_config"] = extra
        return kwargs

    supports_mounts = True

    def bind_mounts(self, child, binds, home: str) -> None:
        """Each host path becomes a bind volume (``{host: {"bind": <home>/<path>, "mode": "ro"
        or "rw"}}``) added to the child's ``volumes``; braces are doubled because DockerSpawner
        formats both sides again."""
        def literal(text: str) -> str:
            return text.replace("{", "{{").replace("}", "}}")

        volumes = dict(child.volumes)
        for host, relative, readonly in binds:
            volumes[literal(host)] = {"bind": literal(f"{home.rstrip('/')}/{relative}"),
                                      "mode": "ro" if readonly else "rw"}
        child.volumes = volumes

    def failure_reason(self, child, error) -> str | None:
        """A Docker engine that did not answer within the client's timeout
        (``c.DockerSpawner.client_kwargs = {"timeout": N}``; docker-py's default is 60 s), or
        that refused the connection, is named as such."""
        import requests

        if isinstance(error, requests.Timeout):
            timeout = getattr(child.client, "timeout", None)
            within = f" within {timeout:g} s" if isinstance(timeout, (int, float)) else ""
            return f"the Docker engine did not answer{within}; please try again in a few minutes"
        if isinstance(error, requests.ConnectionError):
            return "the Docker engine is not reachable right now; please try again in a few minutes"
        return None

    def lower_cpu_weight(self, child, weight: CpuWeight) -> None:
        """``cpu_shares`` in the child's ``extra_host_config`` (a dict, or what its callable
        returns), unless the template, a group override or the operator's config sets them."""
        if weight.cpu_shares <= 0:
            return
        extra = child.extra_host_config
        if not callable(extra):
            child.extra_host_config = with_cpu_shares(extra, weight.cpu_shares)
            return

        async def lowered(spawner):
            value = extra(spawner)
            if inspect.isawaitable(value):
                value = await value
            return with_cpu_shares(value, weight.cpu_shares)

        child.extra_host_config = lowered
