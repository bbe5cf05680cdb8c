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
