"""Read and change templates in a catalogue directory, safely for concurrent writers.

The catalogue files stay the source of truth: the store edits the file a template lives in
(any catalogue file of the directory, in any of the accepted layouts) and puts new templates
in ``<directory>/<name>.yaml``. Every write

* validates the whole resulting catalogue (schema, cross-file checks and the operator's
  :class:`~multiplespawner.catalogue.CataloguePolicy`) *before* taking the lock, and raises
  :class:`~multiplespawner.catalogue.CatalogueError` if it is invalid: validation may be slow
  and must not hold up other writers;
* then happens under an exclusive ``flock`` on ``<directory>/.catalogue.lock``, so the editor
  service and the command-line tool can write at the same time without losing an edit. Under
  the lock the files are read again: if they changed since validation, the change is
  validated again (a few times, then :class:`Conflict`);
* is checked, under the lock, against the caller's ETag (a hash of the template as last read)
  and the caller's ``authorize`` callback; a template that changed meanwhile raises
  :class:`Conflict` instead of being overwritten, a refusal :class:`Forbidden`;
* replaces the file atomically (temp file in the same directory, fsync, rename), so the
  spawner's hot reload sees the old file or the new one, never half a file;
* appends who/when/what (with a unified diff) to ``<directory>/.history.jsonl``.

The methods block (file I/O); async callers run them in a thread.
"""

from __future__ import annotations

import difflib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..catalogue import (
    DEFAULT_POLICY,
    CatalogueError,
    CataloguePolicy,
    Problem,
    build_catalogue,
    catalogue_files,
    document_kind,
    is_identifier,
    read_document,
    validate_document,
)
from ..classes import locate_spawner_class

HISTORY_FILE = ".history.jsonl"
LOCK_FILE = ".catalogue.lock"


class Conflict(Exception):
    """The template changed (or appeared, or vanished) since the caller read it."""

    def __init__(self, name: str, current_etag: str | None):
        self.name = name
        self.current_etag = current_etag
        state = f"its current version is {current_etag}" if current_etag else "it does not exist"
        super().__init__(f"template {name!r} was changed by someone else ({state}); reload and edit again")


class NotFound(KeyError):
    """No template of that name."""


class Forbidden(Exception):
    """The caller's ``authorize`` callback refused the change; ``reasons`` says why."""

    def __init__(self, reasons: list[str]):
        self.reasons = list(reasons)
        super().__init__("; ".join(self.reasons))


#: How often a write validates again when the files changed between validation and the lock.
WRITE_ATTEMPTS = 3


def etag_of(spec: dict) -> str:
    """The version tag of one template: a hash of its canonical JSON."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def dump_yaml(value) -> str:
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False, allow_unicode=True)


@dataclass
class Entry:
    """A template as stored: its spec, the file it lives in, its position there, its ETag."""

    spec: dict
    file: Path
    index: int
    etag: str

    @property
    def name(self) -> str:
        return self.spec["name"]


@dataclass
class _File:
    path: Path
    document: object  # parsed content, as it is in the file (None if it does not parse)
    error: CatalogueError | None = None  # why it does not parse


def _snapshot(files: list[_File]) -> list[tuple]:
    """What must not change between validation and writing."""
    return [(f.path, f.document, str(f.error)) for f in files]


class TemplateStore:
    """Templates of the catalogue directory ``directory``.

    ``extra_paths`` are further catalogue files or directories the spawner reads too (e.g. a
    deployments file kept elsewhere): they take part in validation but are never written.
    """

    def __init__(self, directory: str | os.PathLike, extra_paths=(), policy: CataloguePolicy = DEFAULT_POLICY):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"catalogue directory {self.directory} does not exist")
        self.extra_paths = [Path(p) for p in extra_paths]
        self.policy = policy

    # ---- reading -----------------------------------------------------------------------
    def _files(self) -> list[_File]:
        """The directory's catalogue files, parsed (bounded); a file that does not parse is
        kept with its error, so listing works and every write reports it."""
        files = []
        for path in catalogue_files([self.directory]):
            try:
                files.append(_File(path, read_document(path, self.policy)))
            except CatalogueError as e:
                files.append(_File(path, None, e))
        return files

    @staticmethod
    def _templates_of(document) -> list:
        kind = document_kind(document)
        if kind == "templates":
            return document
        if kind is None and isinstance(document, dict):
            return document.get("templates") or []
        return []

    def _entries(self, files: list[_File]) -> dict[str, Entry]:
        entries: dict[str, Entry] = {}
        for f in files:
            for i, spec in enumerate(self._templates_of(f.document)):
                if isinstance(spec, dict) and isinstance(spec.get("name"), str):
                    entries.setdefault(spec["name"], Entry(spec, f.path, i, etag_of(spec)))
        return entries

    def list(self) -> list[Entry]:
        """Every template in the directory, in catalogue order."""
        return list(self._entries(self._files()).values())

    def get(self, name: str) -> Entry:
        entry = self._entries(self._files()).get(name)
        if entry is None:
            raise NotFound(name)
        return entry

    def validate(self, changes: dict[str, dict | None]) -> None:
        """Raise CatalogueError if applying ``changes`` ({name: spec or None to delete}) would
        leave an invalid catalogue. Writes nothing."""
        self._check(self._apply(self._files(), changes))

    # ---- writing -----------------------------------------------------------------------
    def put(self, name: str, spec: dict, if_match: str | None, actor: str, authorize=None) -> Entry:
        """Create (``if_match`` None) or replace (``if_match`` = the ETag read) template ``name``.

        ``authorize(current_spec_or_None, spec, all_specs)`` returns the reasons to refuse the
        change (empty: allowed); it is called under the lock with the templates as they are
        then. Raises
        Conflict, Forbidden or CatalogueError (also for a name mismatch); nothing is written
        then.
        """
        if not isinstance(spec, dict):
            raise CatalogueError([Problem(str(name), "/", "a template must be a mapping")])
        if not is_identifier(name):
            raise CatalogueError([Problem(repr(name), "/name", "a template name is letters, digits, '.', '_' "
                                          "or '-' (at most 63, starting with a letter or digit)")])
        if spec.get("name") != name:
            raise CatalogueError([Problem(str(name), "/name", f"must be {name!r} (the template being saved)")])
        return self._write(name, spec, if_match, actor, authorize)

    def delete(self, name: str, if_match: str, actor: str, authorize=None) -> None:
        """Remove template ``name`` if it is still at version ``if_match`` (and ``authorize``,
        called under the lock as for :meth:`put`, has no reasons against it)."""
        self._write(name, None, if_match, actor, authorize)

    def history(self, name: str | None = None, limit: int = 100) -> list[dict]:
        """The newest ``limit`` changes (of template ``name``, if given), newest first."""
        path = self.directory / HISTORY_FILE
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return []
        records = [json.loads(line) for line in lines if line.strip()]
        if name is not None:
            records = [r for r in records if r["template"] == name]
        return records[::-1][:limit]

    # ---- internals ---------------------------------------------------------------------
    def _write(self, name: str, spec: dict | None, if_match: str | None, actor: str, authorize) -> Entry | None:
        """Set template ``name`` to ``spec`` (None: delete): validate without the lock, then
        under it re-read the files, re-check version and permission, write and record."""
        for _ in range(WRITE_ATTEMPTS):
            files = self._files()
            self._precondition(files, name, spec, if_match, authorize)
            changed = self._apply(files, {name: spec})
            self._check(changed)
            with self._locked():
                if _snapshot(self._files()) != _snapshot(files):
                    continue  # someone wrote meanwhile: validate the new state again
                current = self._precondition(files, name, spec, if_match, authorize)
                self._write_changed(files, changed)
                after = None if spec is None else self._entries(changed)[name]
                action = "delete" if spec is None else "update" if current else "create"
                self._record(action, name, actor, current, after)
                return after
        current = self._entries(self._files()).get(name)
        raise Conflict(name, current.etag if current else None)

    def _precondition(self, files: list[_File], name: str, spec: dict | None, if_match: str | None,
                      authorize) -> Entry | None:
        """The current entry of ``name`` if the caller may change it; else Conflict/Forbidden."""
        current = self._entries(files).get(name)
        etag = current.etag if current else None
        if etag != if_match or (spec is None and current is None):
            raise Conflict(name, etag)
        if authorize is not None:
            reasons = authorize(current.spec if current else None, spec,
                                [e.spec for e in self._entries(files).values()])
            if reasons:
                raise Forbidden(reasons)
        return current

    @contextmanager
    def _locked(self):
        with open(self.directory / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _apply(self, files: list[_File], changes: dict[str, dict | None]) -> list[_File]:
        """New file contents with ``changes`` applied (inputs untouched)."""
        result = [_File(f.path, json.loads(json.dumps(f.document)), f.error) for f in files]
        pending = dict(changes)
        for f in result:
            templates = self._templates_of(f.document)
            for i in reversed(range(len(templates))):
                spec = templates[i]
                name = spec.get("name") if isinstance(spec, dict) else None
                if name in pending:
                    new = pending.pop(name)
                    if new is None:
                        del templates[i]
                    else:
                        templates[i] = new
        for name, spec in pending.items():
            if spec is not None:
                result.append(_File(self.directory / f"{name}.yaml", [spec]))
        return result

    def _check(self, files: list[_File]) -> None:
        documents, problems = [], []
        for f in files:
            try:
                if f.error is not None:
                    raise f.error
                documents.append(validate_document(f.document, str(f.path)))
            except CatalogueError as e:
                problems += e.problems
        for path in catalogue_files(self.extra_paths):
            try:
                documents.append(validate_document(read_document(path, self.policy), str(path)))
            except CatalogueError as e:
                problems += e.problems
        if problems:
            raise CatalogueError(problems)
        build_catalogue(documents, self.policy, check_class=locate_spawner_class)  # the hub imports the classes

    def _write_changed(self, before: list[_File], after: list[_File]) -> None:
        old = {f.path: f.document for f in before}
        for f in after:
            if f.path in old and old[f.path] == f.document:
                continue
            if f.path.suffix == ".json":
                text = json.dumps(f.document, indent=2) + "\n"
            else:
                text = dump_yaml(f.document)
            self._atomic_write(f.path, text)

    @staticmethod
    def _atomic_write(path: Path, text: str) -> None:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _record(self, action: str, name: str, actor: str, before: Entry | None, after: Entry | None) -> None:
        diff = "".join(difflib.unified_diff(
            dump_yaml(before.spec).splitlines(True) if before else [],
            dump_yaml(after.spec).splitlines(True) if after else [],
            fromfile=f"{name} ({before.etag})" if before else "/dev/null",
            tofile=f"{name} ({after.etag})" if after else "/dev/null",
        ))
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "actor": actor,
            "action": action,
            "template": name,
            "file": (after or before).file.name,
            "etag_before": before.etag if before else None,
            "etag_after": after.etag if after else None,
            "diff": diff,
        }
        with open(self.directory / HISTORY_FILE, "a") as out:
            out.write(json.dumps(record) + "\n")
