"""The virtual machine image for the libvirt provider: a Debian bootable disk, kernel and
initramfs built locally from Debian packages and cached by content hash. See ``build.py``,
``docs/libvirt.md`` and ``python -m images.vm --help``.
"""

from .build import build_vm_image, publish_vm_image

__all__ = ["build_vm_image", "publish_vm_image"]
