"""The adapter interface for child spawners and the registry that picks one for a class.

MultipleSpawner builds its child from a template: the template's ``spawner.kwargs``, then what
the adapter for the child's class maps the chosen resources onto. One adapter per kind of child
spawner (a module beside this one); :func:`adapter_for` picks the adapter of the nearest class
in the child class's MRO, so a subclass (e.g. dockerspawner's SwarmSpawner) gets its base's
adapter unless it has one of its own.

Adapters name the class they adapt as ``"module:QualName"`` and never import it: the class
can only be a base of a child class whose module is loaded, so the registry only looks at
adapters whose module is in ``sys.modules`` already. Loading this package therefore loads no
child spawner package.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from jupyterhub.spawner import Spawner

    from ..choices import Choice

_ADAPTERS: list[type[ChildAdapter]] = []


@dataclass(frozen=True)
class CpuWeight:
    """How much lower than the hub a child's notebook runs on a shared CPU (0: unchanged).

    ``nice`` is the Unix nice value of a local notebook process (and of its session's
    autogroup); ``cpu_shares`` is a container's relative CPU weight (Docker's default is 1024).
    Both are weights, not limits: a notebook still gets every cycle nobody else asks for.
    """

    nice: int = 0
    cpu_shares: int = 0


class ChildAdapter:
    """How the chosen resources reach one kind of child spawner (this class: any Spawner).

    ``cpu_limit``/``mem_limit`` are Spawner traits every spawner has (DockerSpawner and
    KubeSpawner enforce them; LocalProcessSpawner only exports them as CPU_LIMIT/MEM_LIMIT).
    Subclasses override :meth:`resource_kwargs` (calling ``super()``) and set :attr:`adapts`.
    """

    #: the adapted spawner class, ``"module:QualName"``
    adapts: ClassVar[str] = "jupyterhub.spawner:Spawner"
    #: whether this child runs its notebook on a machine the hub reaches over SSH
    #: (``bare_metal``/``virtual_machine`` templates need such a child)
    runs_on_machines: ClassVar[bool] = False
    #: traits whose strings the child passes through ``str.format`` again with its own
    #: ``{username}``-style namespace: placeholder values substituted into them get their braces
    #: doubled (see :func:`~multiplespawner.catalogue.resolve_placeholders`). Subclasses extend it.
    reformatted_kwargs: ClassVar[tuple[str, ...]] = ("notebook_dir", "default_url")
    #: traits the child renders as templates with a syntax no escaping fits (batchspawner's:
    #: Jinja or ``str.format``): a placeholder value with a brace there refuses the spawn (400)
    templated_kwargs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cls: type[Spawner]):
        self.cls = cls

    def resource_kwargs(self, choice: Choice) -> dict:
        """The child's traits for ``choice.resources``; raises ``TemplateError`` for a template
        whose ``spawner.kwargs`` cannot work with the mapping."""
        kwargs: dict = {}
        if "cpu" in choice.resources:
            kwargs["cpu_limit"] = float(choice.resources["cpu"])
        if "memory_mb" in choice.resources:
            kwargs["mem_limit"] = f"{int(choice.resources['memory_mb'])}M"
        return kwargs

    async def start(self, child: Spawner):
        """Start ``child`` and return what its ``start()`` returns (MultipleSpawner calls this
        within the child's ``start_timeout`` and cancels it when that runs out).

        This class: ``child.start()`` alone. An adapter may prepare the child for this one start
        and, when it fails (or is cancelled), clean up what the child's own ``stop()`` will not
        reach: the hub stops a failed child only if its ``poll()`` says it still runs.
        """
        started = child.start()
        return await started if inspect.isawaitable(started) else started

    def failure_reason(self, child: Spawner, error: BaseException) -> str | None:
        """What to tell the user when ``child.start()`` raised ``error`` because a service the
        child depends on failed (naming that service), or None to show the error as it is."""
        return None

    async def before_start(self, spawner: Spawner, child: Spawner) -> None:
        """Run by MultipleSpawner ``spawner`` right before ``child.start()`` (after the machine
        of a machine-backed template is ready). This class: nothing."""

    #: whether :meth:`bind_mounts` can show directories of the hub host inside this child's
    #: notebook (a template's ``mounts``, see docs/mounts.md); others refuse such templates
    supports_mounts: ClassVar[bool] = False

    def bind_mounts(self, child: Spawner, binds: list[tuple[str, str, bool]], home: str) -> None:
        """Make each ``(hub host path, path relative to the notebook user's home, read-only)``
        of ``binds`` appear in ``child``'s notebook at ``<home>/<relative path>`` (set before
        ``start``). This class: not possible (see :attr:`supports_mounts`)."""
        raise NotImplementedError(f"{self.cls.__name__} cannot show the hub host's directories")

    def lower_cpu_weight(self, child: Spawner, weight: CpuWeight) -> None:
        """Make ``child`` start its notebook at ``weight`` (set before ``start``).

        This class: nothing (a child whose notebook does not share the hub's CPU, or whose
        spawner offers no weight). A setting the template or the operator gave the child
        itself wins over ``weight``.
        """


def register(adapter: type[ChildAdapter]) -> type[ChildAdapter]:
    """Add ``adapter`` to the registry (a class decorator for adapter modules)."""
    _ADAPTERS.append(adapter)
    return adapter


def _adapted_class(adapter: type[ChildAdapter]) -> type | None:
    """The class ``adapter`` adapts, if its module is loaded (else no child can derive from it)."""
    module, _, qualname = adapter.adapts.partition(":")
    found = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found if isinstance(found, type) else None


def adapter_for(cls: type[Spawner]) -> ChildAdapter:
    """The adapter of the nearest class in ``cls``'s MRO that has one (:class:`ChildAdapter`
    for a spawner no registered adapter knows)."""
    best, best_depth = ChildAdapter, len(cls.__mro__)
    for adapter in _ADAPTERS:
        base = _adapted_class(adapter)
        if base is not None and issubclass(cls, base) and cls.__mro__.index(base) < best_depth:
            best, best_depth = adapter, cls.__mro__.index(base)
    return best(cls)


def resource_kwargs(cls: type[Spawner], choice: Choice) -> dict:
    """Map the chosen resources onto the traits of a ``cls`` child (see its adapter)."""
    return adapter_for(cls).resource_kwargs(choice)
