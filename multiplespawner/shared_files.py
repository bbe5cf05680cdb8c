"""Find the files the suite ships beside its code: ``playbooks/`` and ``examples/``.

An installed copy puts them under ``<prefix>/share/jupyterhub-multiplespawner/`` (setup.cfg
``data_files``); a source checkout has them next to the packages. The checkout wins when both
exist, so edits in a development checkout take effect.
"""

import sys
import sysconfig
from pathlib import Path

SHARE_NAME = "jupyterhub-multiplespawner"
_CHECKOUT = Path(__file__).resolve().parent.parent


def _roots() -> list[Path]:
    roots = []
    if (_CHECKOUT / "setup.cfg").exists():
        roots.append(_CHECKOUT)
    for prefix in (sysconfig.get_path("data"), sys.prefix, sys.base_prefix, "/usr/local", "/usr"):
        roots.append(Path(prefix) / "share" / SHARE_NAME)
    return roots


def shared_path(*parts: str) -> Path:
    """Return the path of a shipped folder or file, e.g. ``shared_path("playbooks")``.

    Raises FileNotFoundError naming every place looked at if it is nowhere.
    """
    tried = []
    for root in _roots():
        candidate = root.joinpath(*parts)
        if candidate.exists():
            return candidate
        tried.append(str(candidate))
    raise FileNotFoundError(f"{'/'.join(parts)} not found; looked in: {', '.join(tried)}")
