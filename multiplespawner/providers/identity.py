"""How providers label the machines they make (container labels, cloud tags or metadata).

A machine carries ``org.jupyterhub-multiplespawner.<key>=<value>`` for every entry of
``MachineSpec.labels`` (at least ``hub``, normally also ``user`` and ``server``), and under
``org.jupyterhub-multiplespawner.machine.*`` what a provider needs to rebuild the
:class:`~.base.Machine` after a hub restart (SSH user, public host key, machine name).
``list(hub_id)`` selects on the ``hub`` label.
"""

from __future__ import annotations

import re

from .base import LABEL_PREFIX, MachineSpec, ProviderError

HUB = "hub"  #: the label key that ``Provider.list(hub_id)`` selects on
_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_INTERNAL = f"{LABEL_PREFIX}.machine."


def check_labels(labels: dict) -> None:
    """Refuse labels ``list()`` could not find or providers could not store."""
    if not labels.get(HUB):
        raise ProviderError(f"machine labels need a {HUB!r} entry (the hub id) so the hub can find it again")
    for key, value in labels.items():
        if not _KEY.match(str(key)) or not isinstance(value, str):
            raise ProviderError(
                f"machine label {key!r}={value!r}: keys are lower-case letters, digits, '-' and '_', "
                "values are strings"
            )


def internal_label(name: str) -> str:
    """The full name of a label the provider itself sets (``ssh-user``, ``host-key``, ``name``)."""
    return _INTERNAL + name


def machine_labels(spec: MachineSpec, host_public_key: str) -> dict:
    """All labels/tags for the machine made from ``spec``."""
    labels = {f"{LABEL_PREFIX}.{k}": v for k, v in spec.labels.items()}
    labels[internal_label("name")] = spec.name
    labels[internal_label("ssh-user")] = spec.ssh_user
    labels[internal_label("host-key")] = host_public_key
    return labels


def spec_labels(labels: dict) -> dict:
    """The ``MachineSpec.labels`` part of a machine's labels (prefix removed, internals left out)."""
    prefix = LABEL_PREFIX + "."
    return {
        k[len(prefix):]: v
        for k, v in (labels or {}).items()
        if k.startswith(prefix) and not k.startswith(_INTERNAL)
    }
