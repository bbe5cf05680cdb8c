"""Build the suite's images with no image registry, cached by content hash.

``build_image(name, client)`` returns ``jupyterhub-multiplespawner/<name>:<hash12>`` and also
tags it ``:current``. The hash covers everything that decides the image's content, so when the
tag already exists nothing is built:

* ``base``: Debian bookworm from ``debootstrap --variant=minbase`` (the host's Debian mirror and
  apt proxy), imported with ``docker import``. The root filesystem tarball is kept under
  ``~/.cache/jupyterhub-multiplespawner/rootfs/`` so re-importing it needs no download.
* ``notebook`` and ``ssh-machine``: ``docker build`` of ``recipes/<name>/`` on top of ``base``.
  Python packages are downloaded as wheels on the host once per requirement set and target
  Python (``~/.cache/jupyterhub-multiplespawner/wheels/<key>/``), resolved for the exact CPython
  of the base image (``DEBIAN_PYTHON``, checked in the build), and installed in the image with
  ``pip install --no-index``.

This is a build tool for tests and operators: it blocks (subprocess, docker-py) and must not be
called on an event loop. Concurrent builders serialise on per-step file locks.
"""

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import docker

HERE = Path(__file__).resolve().parent
RECIPES = HERE / "recipes"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jupyterhub-multiplespawner"
REPOSITORY = "jupyterhub-multiplespawner"
ALIAS = "current"

# Everything that decides the base root filesystem; its hash names the base image.
BASE_RECIPE = {
    "suite": "bookworm",
    "variant": "minbase",
    "include": ["python3", "python3-venv", "openssh-server", "sudo", "ca-certificates"],
    # removed from the tree before import: per-machine identity and package caches
    "strip": [
        "etc/ssh/ssh_host_*",
        "var/cache/apt/archives/*.deb",
        "var/lib/apt/lists/*_Packages",
        "var/log/*.log",
    ],
    "changes": [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'CMD ["/bin/bash"]',
    ],
}


def log(message: str) -> None:
    """Progress for humans: stderr, so stdout carries only the tags."""
    print(f"[images {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True).encode())
        h.update(b"\0")
    return h.hexdigest()


@contextmanager
def _locked(name: str):
    """Hold an exclusive lock named ``name`` across processes (other builders wait)."""
    lock_dir = CACHE / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _image_exists(client, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _alias(client, tag: str) -> None:
    repository = tag.rsplit(":", 1)[0]
    client.images.get(tag).tag(repository, ALIAS)


# -- the host's Debian mirror and apt proxy -----------------------------------------------------


def host_debian_mirror(suite: str = BASE_RECIPE["suite"]) -> str:
    """The first Debian archive URI the host's apt sources use for ``suite`` (not -security)."""
    apt = Path("/etc/apt")
    stanzas = []
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for block in path.read_text().split("\n\n"):
            fields = {}
            for line in block.splitlines():
                if ":" in line and not line.lstrip().startswith("#"):
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.split()
            if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"]) != ["no"]:
                stanzas += [(uri, fields.get("suites", [])) for uri in fields.get("uris", [])]
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        if path.exists():
            for line in path.read_text().splitlines():
                words = [w for w in line.split("#", 1)[0].split() if not w.startswith("[")]
                if len(words) >= 3 and words[0] == "deb":
                    stanzas.append((words[1], [words[2]]))
    for uri, suites in stanzas:
        if suite in suites:
            return uri
    return "http://deb.debian.org/debian"


def apt_proxy_env() -> dict:
    """``http_proxy``/``https_proxy`` from the host's apt configuration, for debootstrap."""
    env = {}
    for scheme in ("http", "https"):
        result = subprocess.run(
            ["apt-config", "dump", f"Acquire::{scheme}::Proxy"], capture_output=True, text=True
        )
        for line in result.stdout.splitlines():
            key, _, value = line.partition(" ")
            value = value.strip().rstrip(";").strip('"')
            if key == f"Acquire::{scheme}::Proxy" and value and value != "DIRECT":
                env[f"{scheme}_proxy"] = value
    return env


# -- base image ------------------------------------------------------------------------------


def _unmount_below(root: Path) -> None:
    """Unmount anything a failed debootstrap left mounted under ``root`` (deepest first)."""
    mounts = []
    with open("/proc/mounts") as f:
        for line in f:
            point = line.split()[1].replace("\\040", " ")
            if point == str(root) or point.startswith(f"{root}/"):
                mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False)


def remove_tree(root: Path) -> None:
    """Remove ``root``: first unmount whatever is mounted below it, then delete it without
    crossing into another file system."""
    _unmount_below(root)
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)


def _debootstrap(tarball: Path) -> None:
    """Make the base root filesystem and store it as an uncompressed tarball."""
    mirror = host_debian_mirror()
    log(f"debootstrap {BASE_RECIPE['suite']} from {mirror} (about a minute)")
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=tarball.parent))
    rootfs = work / "rootfs"
    try:
        result = subprocess.run(
            [
                "debootstrap",
                f"--variant={BASE_RECIPE['variant']}",
                f"--include={','.join(BASE_RECIPE['include'])}",
                BASE_RECIPE["suite"],
                str(rootfs),
                mirror,
            ],
            env={**os.environ, **apt_proxy_env()},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        _unmount_below(rootfs)
        if result.returncode != 0:
            tail = "\n".join(result.stdout.splitlines()[-30:])
            debootstrap_log = rootfs / "debootstrap" / "debootstrap.log"
            if debootstrap_log.exists():
                tail += "\n--- debootstrap.log ---\n" + "\n".join(
                    debootstrap_log.read_text(errors="replace").splitlines()[-30:]
                )
            raise RuntimeError(f"debootstrap failed ({result.returncode}):\n{tail}")
        for pattern in BASE_RECIPE["strip"]:
            for path in rootfs.glob(pattern):
                path.unlink()
        (rootfs / "etc" / "machine-id").write_text("")
        partial = work / "rootfs.tar"
        subprocess.run(
            ["tar", "--numeric-owner", "--one-file-system", "-C", str(rootfs), "-cf", str(partial), "."],
            check=True,
        )
        partial.rename(tarball)
    finally:
        remove_tree(work)


def base_image(client) -> str:
    """Tag of the Debian base image, importing (and debootstrapping) it only if missing."""
    key = _digest(BASE_RECIPE)[:12]
    tag = f"{REPOSITORY}/base:{key}"
    with _locked("base"):
        if _image_exists(client, tag):
            log(f"base: {tag} cached")
            return tag
        rootfs_dir = CACHE / "rootfs"
        rootfs_dir.mkdir(parents=True, exist_ok=True)
        tarball = rootfs_dir / f"{BASE_RECIPE['suite']}-{key}.tar"
        if tarball.exists():
            log(f"base: root filesystem {tarball} cached")
        else:
            _debootstrap(tarball)
        log(f"base: docker import {tarball} as {tag}")
        repository, image_tag = tag.rsplit(":", 1)
        client.api.import_image_from_file(
            str(tarball), repository=repository, tag=image_tag, changes=BASE_RECIPE["changes"]
        )
        _alias(client, tag)
        return tag


# -- wheels ----------------------------------------------------------------------------------


#: The file in a wheel directory that names the exact CPython its wheels were resolved for.
#: ``AnsibleConfigurer`` reads it and the playbook compares it with the machine's Python.
WHEEL_PYTHON_FILE = "python-version"

#: The exact ``python3`` of each Debian suite the images are made from. A stable release never
#: moves to a newer upstream version (fixes are patches on this one), so wheels resolved for it
#: stay right; both builders check it against the real interpreter before installing.
DEBIAN_PYTHON = {"bookworm": "3.11.2"}


def python_version_of(argv: list) -> str:
    """The exact version (``3.11.2``) of the CPython that ``argv`` runs (a command prefix such
    as ``["chroot", ROOTFS, "/usr/bin/python3"]``)."""
    result = subprocess.run(
        [*map(str, argv), "-c", "import platform; print(platform.python_version())"],
        capture_output=True, text=True, check=True,
    )
    return result.stdout.strip()


def check_wheel_python(wheels: Path, python_version: str) -> None:
    """Raise RuntimeError unless ``wheels`` was resolved for exactly ``python_version``.

    Same minor version is not enough: a dependency may require a newer patch release
    (``Requires-Python >= 3.11.5``) than the target has.
    """
    recorded = (wheels / WHEEL_PYTHON_FILE).read_text().strip() if (wheels / WHEEL_PYTHON_FILE).exists() else None
    if recorded != python_version:
        raise RuntimeError(
            f"the wheels in {wheels} are for Python {recorded or '(not recorded)'}, the target has "
            f"{python_version}: download them with `pip download --only-binary=:all: "
            f"--python-version {python_version}`"
        )


def wheelhouse(requirements: list, python_version: str) -> Path:
    """A directory of wheels for ``requirements`` and their dependencies, for CPython
    ``python_version`` exactly (the target's ``X.Y.Z``, not the builder's), downloaded once.

    ``pip download --only-binary=:all: --python-version X.Y.Z`` resolves dependencies as the
    target's interpreter would (``Requires-Python`` included) for this machine's platform; the
    version is written to ``WHEEL_PYTHON_FILE`` in the directory. Keyed by the requirement set,
    that version and the machine; run with the running interpreter's pip (the project venv's,
    so the host's package index settings apply).
    """
    key = _digest(sorted(requirements), python_version, platform.machine())[:16]
    target = CACHE / "wheels" / key
    with _locked(f"wheels-{key}"):
        if (target / ".complete").exists():
            log(f"wheels for {' '.join(requirements)} (Python {python_version}): {target} cached")
            return target
        log(f"downloading wheels for {' '.join(requirements)} (Python {python_version}) into {target}")
        shutil.rmtree(target, ignore_errors=True)
        partial = target.with_name(f"{key}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
             "--python-version", python_version, "--dest", str(partial), *requirements],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise RuntimeError(
                f"pip download {' '.join(requirements)} for Python {python_version} failed:\n"
                f"{result.stdout[-3000:]}"
            )
        (partial / WHEEL_PYTHON_FILE).write_text(python_version + "\n")
        (partial / ".complete").write_text("\n".join(requirements) + "\n")
        partial.rename(target)
        return target


def notebook_requirements() -> list:
    """jupyterhub at exactly the hub's version, and the JupyterLab the hub's venv has."""
    try:
        return [f"jupyterhub=={version('jupyterhub')}", f"jupyterlab=={version('jupyterlab')}"]
    except Exception as e:
        raise RuntimeError(
            "run the image builder with the project venv's python (it reads the hub's "
            f"JupyterHub and JupyterLab versions from there): {e}"
        ) from e


# -- images from recipes ---------------------------------------------------------------------

# name -> function returning the pip requirements baked into the image (None: no wheels)
IMAGES = {
    "base": None,
    "notebook": notebook_requirements,
    "ssh-machine": None,
}


def _recipe_files(name: str) -> dict:
    recipe = RECIPES / name
    return {
        str(p.relative_to(recipe)): p.read_bytes() for p in sorted(recipe.rglob("*")) if p.is_file()
    }


def _docker_build(client, context: Path, tag: str, buildargs: dict) -> None:
    output = []
    for chunk in client.api.build(
        path=str(context),
        tag=tag,
        buildargs=buildargs,
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
    ):
        if "stream" in chunk:
            text = chunk["stream"].rstrip()
            if text:
                output.append(text)
                print(text, file=sys.stderr, flush=True)
        if "error" in chunk:
            tail = "\n".join(output[-30:])
            raise RuntimeError(f"docker build of {tag} failed: {chunk['error']}\n{tail}")


def build_image(name: str, client, alias: bool = True) -> str:
    """Return the tag of image ``name``, building whatever is missing; log "cached" if nothing is.

    With ``alias`` the image is also tagged ``:current``.

    Blocking: call it from a thread or a plain process, never on an event loop.
    """
    if name not in IMAGES:
        raise ValueError(f"unknown image {name!r}; known: {', '.join(IMAGES)}")
    base = base_image(client)
    if name == "base":
        return base
    requirements = IMAGES[name]() if IMAGES[name] else []
    python = DEBIAN_PYTHON[BASE_RECIPE["suite"]]
    wheels = wheelhouse(requirements, python) if requirements else None
    wheel_names = sorted(p.name for p in wheels.glob("*.whl")) if wheels else []
    files = _recipe_files(name)
    key = _digest(
        name, base, requirements, wheel_names,
        {path: hashlib.sha256(data).hexdigest() for path, data in files.items()},
    )[:12]
    tag = f"{REPOSITORY}/{name}:{key}"
    with _locked(name):
        if _image_exists(client, tag):
            log(f"{name}: {tag} cached")
            if alias:
                _alias(client, tag)
            return tag
        log(f"{name}: building {tag}")
        with tempfile.TemporaryDirectory(prefix=f"image-{name}-") as tmp:
            context = Path(tmp)
            buildargs = {"BASE": base}
            for path, data in files.items():
                (context / path).parent.mkdir(parents=True, exist_ok=True)
                (context / path).write_bytes(data)
            if wheels:
                shutil.copytree(wheels, context / "wheels", ignore=shutil.ignore_patterns(".complete"))
                buildargs["PYTHON_VERSION"] = python
                (context / "requirements.txt").write_text("\n".join(requirements) + "\n")
            _docker_build(client, context, tag, buildargs)
        if alias:
            _alias(client, tag)
        return tag
