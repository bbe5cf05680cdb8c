"""What identifies a machine a provider made: its labels and its SSH host key.

Labels: ``MachineSpec.labels`` are full label names, ``org.jupyterhub-multiplespawner.<name>``
(at least ``...hub``, the hub id; normally also ``...user`` and ``...server``). Providers store
them on the machine as they are (container labels, cloud tags or metadata, domain metadata), and
under ``org.jupyterhub-multiplespawner.machine.*`` what they need to rebuild the
:class:`~.base.Machine` after a hub restart (machine name, SSH user, public host key).
``Provider.list(hub_id)`` selects on :data:`HUB_LABEL`.

Host key: the machine presents ``MachineSpec.host_key_private``; the caller pins its public half.
Machines that boot with cloud-init get both keys and the login account through
:func:`cloud_init_user_data`.
"""

from __future__ import annotations

import asyncssh
import yaml

from .base import LABEL_PREFIX, MachineSpec, ProviderError

#: the label ``Provider.list(hub_id)`` selects on
HUB_LABEL = f"{LABEL_PREFIX}.hub"
_INTERNAL = f"{LABEL_PREFIX}.machine."
#: longest key and value every supported store accepts (EC2 tags: 128 / 256 characters)
_MAX_KEY, _MAX_VALUE = 128, 256
#: cloud-init ``ssh_keys`` names by OpenSSH key type
_CLOUD_INIT_KEY_TYPES = {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa", "ecdsa-sha2-nistp256": "ecdsa",
                         "ecdsa-sha2-nistp384": "ecdsa", "ecdsa-sha2-nistp521": "ecdsa"}


def check_labels(labels: dict) -> None:
    """Refuse labels that ``list()`` could not find again or a provider could not store."""
    if not labels.get(HUB_LABEL):
        raise ProviderError(f"machine labels need {HUB_LABEL!r} (the hub id) so the hub can find the machine again")
    for key, value in labels.items():
        if (
            not isinstance(key, str) or not key.startswith(LABEL_PREFIX + ".") or key.startswith(_INTERNAL)
            or len(key) > _MAX_KEY or not isinstance(value, str) or len(value) > _MAX_VALUE
        ):
            raise ProviderError(
                f"machine label {key!r}={value!r}: keys are {LABEL_PREFIX}.<name> (not .machine.*, at most "
                f"{_MAX_KEY} characters), values are strings of at most {_MAX_VALUE} characters"
            )


def internal_label(name: str) -> str:
    """The full name of a label the provider itself sets (``name``, ``ssh-user``, ``host-key``)."""
    return _INTERNAL + name


def machine_labels(spec: MachineSpec, host_public_key: str) -> dict:
    """All labels (or tags) of the machine made from ``spec``."""
    return {
        **spec.labels,
        internal_label("name"): spec.name,
        internal_label("ssh-user"): spec.ssh_user,
        internal_label("host-key"): host_public_key,
    }


def spec_labels(labels: dict) -> dict:
    """The ``MachineSpec.labels`` part of a machine's labels (the provider's own left out)."""
    prefix = LABEL_PREFIX + "."
    return {k: v for k, v in (labels or {}).items() if k.startswith(prefix) and not k.startswith(_INTERNAL)}


def public_host_key(host_key_private: str) -> str:
    """The OpenSSH public key line (``type base64``) of a private host key.

    Raises ProviderError if the key does not parse or is encrypted.
    """
    try:
        key = asyncssh.import_private_key(host_key_private)
    except (asyncssh.KeyImportError, ValueError) as e:
        raise ProviderError(f"the machine's host key is not a valid unencrypted private key: {e}") from e
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


def cloud_init_user_data(ssh_user: str, authorized_key: str, host_key_private: str, host_public_key: str) -> str:
    """``#cloud-config`` user data: one login account with one key, and a fixed host key.

    cloud-init deletes the image's host keys, generates none, and installs the given one; the
    default user of the image is not created and root logins are disabled.
    """
    key_type = _CLOUD_INIT_KEY_TYPES.get(host_public_key.split()[0])
    if key_type is None:
        raise ProviderError(f"cloud-init cannot install a {host_public_key.split()[0]} host key")
    config = {
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {
            f"{key_type}_private": host_key_private.strip() + "\n",
            f"{key_type}_public": host_public_key,
        },
        "disable_root": True,
        "ssh_pwauth": False,
        "users": [
            {
                "name": ssh_user,
                "shell": "/bin/bash",
                "lock_passwd": True,
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "ssh_authorized_keys": [authorized_key.strip()],
            }
        ],
    }
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
