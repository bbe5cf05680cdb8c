"""DockerSpawner children: CPU and memory limits on the container, GPUs as a device request."""

from __future__ import annotations

from .base import ChildAdapter, register


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
