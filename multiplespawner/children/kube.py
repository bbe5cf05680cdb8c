"""KubeSpawner children: limits and guarantees that Kubernetes accepts, GPUs as an extended
resource, and the catalogue in place of KubeSpawner's own ``profile_list``."""

from __future__ import annotations

from jupyterhub.traitlets import ByteSpecification

from ..classes import TemplateError
from .base import ChildAdapter, register


@register
class KubeAdapter(ChildAdapter):
    adapts = "kubespawner.spawner:KubeSpawner"
    reformatted_kwargs = ChildAdapter.reformatted_kwargs + (
        "user_namespace_template", "pod_name_template", "secret_name_template", "pvc_name_template",
        "working_dir", "environment", "extra_labels", "extra_annotations", "volumes", "volume_mounts",
        "init_containers", "service_account", "extra_pod_config", "extra_containers",
        "storage_extra_labels", "storage_extra_annotations", "storage_selector",
        "user_namespace_labels", "user_namespace_annotations", "pod_connect_ip",
    )

    def resource_kwargs(self, choice) -> dict:
        """What a KubeSpawner child needs besides ``cpu_limit``/``mem_limit``.

        - ``profile_list`` is emptied: KubeSpawner applies its default profile's
          ``kubespawner_override`` when it starts, which would replace the chosen resources and
          the template's traits (a ``c.KubeSpawner.profile_list`` reaches the child through the
          configuration). The catalogue takes its place, so a template that sets one is refused.
        - A ``cpu_guarantee``/``mem_guarantee`` the template sets is lowered to the chosen
          limit: Kubernetes refuses a pod whose request exceeds its limit. Without one,
          Kubernetes makes the request equal to the limit.
        - GPUs are the ``nvidia.com/gpu`` extended resource, added to the template's
          ``extra_resource_limits``.
        """
        template_kwargs = choice.template.spawner_kwargs
        if "profile_list" in template_kwargs:
            raise TemplateError("KubeSpawner's profile_list cannot be set in a template; the catalogue's "
                                "templates and resource choices take its place")
        kwargs = super().resource_kwargs(choice)
        kwargs["profile_list"] = []
        if "cpu_limit" in kwargs and template_kwargs.get("cpu_guarantee") is not None:
            kwargs["cpu_guarantee"] = min(float(template_kwargs["cpu_guarantee"]), kwargs["cpu_limit"])
        if "mem_limit" in kwargs and template_kwargs.get("mem_guarantee") is not None:
            as_bytes = ByteSpecification().validate
            kwargs["mem_guarantee"] = min(as_bytes(None, template_kwargs["mem_guarantee"]),
                                          as_bytes(None, kwargs["mem_limit"]))
        gpus = choice.resources.get("gpus")
        if gpus:
            extra = dict(template_kwargs.get("extra_resource_limits", {}))
            extra["nvidia.com/gpu"] = str(int(gpus))
            kwargs["extra_resource_limits"] = extra
        return kwargs
