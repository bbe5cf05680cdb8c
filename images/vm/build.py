"""Build the virtual machine image for the libvirt provider, cached by content hash.

``build_vm_image()`` returns a directory ``~/.cache/jupyterhub-multiplespawner/vm/<hash12>/``
holding:

* ``disk.qcow2``: one ext4 filesystem spanning the whole virtual disk (no partition table, no
  boot loader), made with ``mke2fs -d`` from a Debian bookworm root filesystem;
* ``vmlinuz`` and ``initrd.img``: the guest's kernel and initramfs, booted directly by QEMU
  (``root=/dev/vda``), so the disk needs no boot loader;
* ``image.json``: what the image contains and the kernel command line it expects.

Nothing is downloaded but Debian packages and the notebook's wheels: ``debootstrap`` (minbase)
from the host's Debian mirror, then ``apt-get install`` in a chroot of the kernel, cloud-init,
OpenSSH and Python with ``venv`` (for Ansible and the notebook). The **notebook environment** is
baked in, as in an operator's golden image: a venv at ``/opt/jupyterhub-notebook`` (where the
shipped playbooks expect it) with jupyterhub at the hub's exact version and the hub's
JupyterLab, installed in the chroot by the guest's own ``/usr/bin/python3`` from the wheels the
host downloaded (``images.build.wheelhouse``), offline (``--no-index``). The wheels are
resolved for the guest's exact Python (``images.build.DEBIAN_PYTHON``, e.g. 3.11.2), whatever
Python runs the builder; a guest whose Python differs is refused before anything is installed. No SSH host keys, users
or machine id are baked in: each machine gets its own from its cloud-init seed at first boot
(see ``multiplespawner/providers/libvirt.py``).

The hash covers :data:`VM_RECIPE`, the files in ``guest/``, the notebook requirements and the
names of the wheels that satisfy them; when the directory for that hash exists, nothing is
rebuilt. A build that fails leaves nothing in the cache. Concurrent builders of the same image
wait on a file lock. Needs root (debootstrap, chroot, mount) and the project venv's Python
(it reads the hub's JupyterHub and JupyterLab versions there).
"""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..build import (
    CACHE,
    DEBIAN_PYTHON,
    apt_proxy_env,
    check_wheel_python,
    host_debian_mirror,
    log,
    notebook_requirements,
    python_version_of,
    wheelhouse,
)

HERE = Path(__file__).resolve().parent
GUEST = HERE / "guest"
VM_CACHE = CACHE / "vm"

#: Everything that decides the image besides the files in ``guest/``.
VM_RECIPE = {
    "suite": "bookworm",
    "variant": "minbase",
    "packages": [
        "linux-image-cloud-amd64", "initramfs-tools", "systemd-sysv", "ifupdown",
        "isc-dhcp-client", "openssh-server", "cloud-init", "python3", "python3-venv", "sudo",
        "ca-certificates",
    ],
    # the notebook environment (the shipped playbooks' default notebook_env_path)
    "notebook_env": "/opt/jupyterhub-notebook",
    "disk_size": "3G",
    "cmdline": "root=/dev/vda rw console=ttyS0 net.ifnames=0",
    # guest/<file> -> path in the root filesystem
    "files": {
        "fstab": "etc/fstab",
        "interfaces": "etc/network/interfaces",
        "cloud.cfg": "etc/cloud/cloud.cfg.d/90-multiplespawner.cfg",
        "sshd.conf": "etc/ssh/sshd_config.d/multiplespawner.conf",
        "resolv.conf": "etc/resolv.conf",
    },
    # cloud-init's config and final stages (units masked): everything the seed asks for (user,
    # keys, host key, host name, /etc/hosts, growing the disk) is done in its init stage; the
    # later stages only start cloud-init's Python twice more, which under software emulation
    # costs a minute of the guest's CPU while the configurer runs
    "masked_units": ["cloud-config.service", "cloud-final.service"],
    # image.json's "prepared" record (and the guest's copy, PREPARED_IN_GUEST) lists what the
    # build prepared, so that a configurer can compare it with what it would install
    "prepared_record": 1,
}

#: Where the guest keeps its copy of image.json's "prepared" record (root-owned, 0644).
PREPARED_IN_GUEST = "etc/jupyterhub-multiplespawner/prepared.json"

#: Names of the files in an image directory.
DISK, KERNEL, INITRD, MANIFEST = "disk.qcow2", "vmlinuz", "initrd.img", "image.json"


def notebook_wheels() -> tuple[list[str], Path]:
    """The notebook requirements and the wheel directory that satisfies them (built once)."""
    requirements = notebook_requirements()
    return requirements, wheelhouse(requirements, DEBIAN_PYTHON[VM_RECIPE["suite"]])


def recipe_hash(requirements: list[str], wheels: Path) -> str:
    """The content hash that names the image (recipe, guest files, requirements and wheels)."""
    h = hashlib.sha256(json.dumps(VM_RECIPE, sort_keys=True).encode())
    for name in sorted(VM_RECIPE["files"]):
        h.update(b"\0" + name.encode() + b"\0" + (GUEST / name).read_bytes())
    wheel_names = sorted(p.name for p in wheels.glob("*.whl"))
    h.update(b"\0" + json.dumps([sorted(requirements), wheel_names]).encode())
    return h.hexdigest()[:12]


def build_vm_image() -> Path:
    """Return the image directory for the current recipe, building it if it is not cached."""
    requirements, wheels = notebook_wheels()
    key = recipe_hash(requirements, wheels)
    target = VM_CACHE / key
    if (target / MANIFEST).exists():
        log(f"vm image {key}: cached")
        return target
    VM_CACHE.mkdir(parents=True, exist_ok=True)
    with _locked(VM_CACHE / f".{key}.lock"):
        if (target / MANIFEST).exists():  # another builder finished while we waited
            return target
        work = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=VM_CACHE))
        try:
            _build(work, key, requirements, wheels)
            work.rename(target)  # atomic: the directory is complete or absent
        finally:
            _remove_tree(work)
    return target


def publish_vm_image(image: Path, root: Path) -> Path:
    """Make ``image`` available as ``root/<hash>/`` and return that directory.

    libvirt runs QEMU as its own user, which cannot read ``~/.cache`` of root; the published
    copy sits in a directory it can reach. Files are hard links when ``root`` is on the same
    file system (no space used), copies otherwise. Idempotent.
    """
    target = root / image.name
    if (target / MANIFEST).exists():
        return target
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    root.chmod(0o755)
    work = Path(tempfile.mkdtemp(prefix=f".publish-{image.name}-", dir=root))
    try:
        for name in (DISK, KERNEL, INITRD, MANIFEST):
            try:
                os.link(image / name, work / name)
            except OSError:
                shutil.copy2(image / name, work / name)
        work.chmod(0o755)
        work.rename(target)
    except OSError:
        if not (target / MANIFEST).exists():  # not a concurrent publisher that won the race
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _build(out: Path, key: str, requirements: list[str], wheels: Path) -> None:
    rootfs = out / "rootfs"
    mirror = host_debian_mirror(VM_RECIPE["suite"])
    env = {**os.environ, **apt_proxy_env(), "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    log(f"vm image {key}: debootstrap {VM_RECIPE['suite']} from {mirror}")
    _run(["debootstrap", f"--variant={VM_RECIPE['variant']}", VM_RECIPE["suite"], rootfs, mirror],
         env=env)
    # no daemon may start inside the chroot while packages are installed
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    shutil.copyfile("/etc/resolv.conf", rootfs / "etc/resolv.conf")
    log(f"vm image {key}: installing {len(VM_RECIPE['packages'])} packages in the chroot")
    with _mounted_proc(rootfs):
        _run(["chroot", rootfs, "apt-get", "install", "-y", "-q", "--no-install-recommends",
              *VM_RECIPE["packages"]], env=env)
        _run(["chroot", rootfs, "apt-get", "clean"], env=env)
        notebook_env = _install_notebook_env(rootfs, key, requirements, wheels, env)
    policy.unlink()
    prepared = {"notebook_env": notebook_env}
    record = rootfs / PREPARED_IN_GUEST
    record.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    record.write_text(json.dumps(prepared, indent=2, sort_keys=True) + "\n")
    record.chmod(0o644)
    for unit in VM_RECIPE["masked_units"]:
        (rootfs / "etc/systemd/system" / unit).symlink_to("/dev/null")
    for name, dest in VM_RECIPE["files"].items():
        path = rootfs / dest
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(GUEST / name, path)
        path.chmod(0o644)
    # per-machine identity is made at first boot, never shared through the image
    for path in [*rootfs.glob("etc/ssh/ssh_host_*"), *rootfs.glob("var/lib/apt/lists/*_Packages"),
                 rootfs / "var/lib/dbus/machine-id"]:
        path.unlink(missing_ok=True)
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "etc/hostname").write_text("localhost\n")
    kernels = sorted(rootfs.glob("boot/vmlinuz-*"))
    initrds = sorted(rootfs.glob("boot/initrd.img-*"))
    if len(kernels) != 1 or len(initrds) != 1:
        raise RuntimeError(f"expected one kernel and one initrd in /boot, found {kernels} {initrds}")
    shutil.copyfile(kernels[0], out / KERNEL)
    shutil.copyfile(initrds[0], out / INITRD)
    log(f"vm image {key}: making the {VM_RECIPE['disk_size']} ext4 disk")
    raw = out / "disk.raw"
    _run(["mke2fs", "-q", "-t", "ext4", "-L", "root", "-d", rootfs, raw, VM_RECIPE["disk_size"]])
    _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, out / DISK])
    raw.unlink()
    _remove_tree(rootfs)
    for name in (DISK, KERNEL, INITRD):
        (out / name).chmod(0o644)  # read by the QEMU process, which may run as another user
    manifest = {
        "hash": key,
        "suite": VM_RECIPE["suite"],
        "kernel": kernels[0].name,
        "cmdline": VM_RECIPE["cmdline"],
        "disk": DISK,
        "disk_format": "qcow2",
        "packages": VM_RECIPE["packages"],
        "notebook_env": VM_RECIPE["notebook_env"],
        "notebook_packages": requirements,
        "prepared": prepared,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _install_notebook_env(rootfs: Path, key: str, requirements: list[str], wheels: Path, env: dict) -> dict:
    """The notebook venv, made and filled in the chroot by the guest's Python, offline.

    Returns what was prepared, as the configurer compares it (see
    ``multiplespawner/configurers/prepared.py``): the venv's ``path``, the ``python`` that made
    it and that Python's exact ``python_version``, the ``requirements`` installed, the venv's
    ``pip freeze --all`` lines (``packages``) and the ``singleuser_version`` that
    ``jupyterhub-singleuser --version`` printed in the finished environment.
    """
    python = "/usr/bin/python3"
    python_version = python_version_of(["chroot", rootfs, python])
    check_wheel_python(wheels, python_version)
    venv = VM_RECIPE["notebook_env"]
    staged = rootfs / "tmp/notebook-wheels"
    shutil.copytree(wheels, staged, ignore=shutil.ignore_patterns(".complete"))
    (staged / "requirements.txt").write_text("\n".join(requirements) + "\n")
    log(f"vm image {key}: notebook environment {venv} ({' '.join(requirements)})")
    try:
        # umask 022: the environment is root's, run by the notebook users
        _run(["chroot", rootfs, "/bin/sh", "-c",
              f"umask 022 && {python} -m venv {venv} && {venv}/bin/pip install -q "
              "--no-cache-dir --no-index --find-links /tmp/notebook-wheels "
              "-r /tmp/notebook-wheels/requirements.txt"], env=env)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    freeze = _run(["chroot", rootfs, f"{venv}/bin/python", "-m", "pip", "freeze", "--all"], env=env,
                  stderr_apart=True)
    singleuser = _run(["chroot", rootfs, f"{venv}/bin/jupyterhub-singleuser", "--version"], env=env,
                      stderr_apart=True)
    return {
        "path": venv,
        "python": python,
        "python_version": python_version,
        "requirements": list(requirements),
        "packages": [line for line in freeze.splitlines() if line.strip()],
        "singleuser_version": singleuser.strip().splitlines()[-1],
    }


def _run(argv, env=None, stderr_apart: bool = False) -> str:
    """Run a build step and return its output; on failure raise with the tail of it.

    ``stderr_apart``: return only the standard output (a listing to parse, without warnings).
    """
    result = subprocess.run([str(a) for a in argv], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE if stderr_apart else subprocess.STDOUT, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + (result.stderr or "")).splitlines()[-40:])
        raise RuntimeError(f"{Path(str(argv[0])).name} failed ({result.returncode}):\n{tail}")
    return result.stdout


@contextmanager
def _locked(path: Path):
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@contextmanager
def _mounted_proc(rootfs: Path):
    """/proc inside the chroot for package scripts; unmounted whatever happens."""
    point = rootfs / "proc"
    subprocess.run(["mount", "-t", "proc", "proc", str(point)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "--lazy", str(point)], check=False)


def _remove_tree(root: Path) -> None:
    """Remove a build tree, never crossing into a file system still mounted below it."""
    if root.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)
