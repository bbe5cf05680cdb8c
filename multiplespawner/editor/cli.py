"""``multiplespawner-templates``: list, show, validate, diff and apply templates.

Talks to the template editor service (``--url``, token from ``$JUPYTERHUB_API_TOKEN``, never
from the command line) or works on the catalogue directory directly (``--catalogue-dir``),
with the same validation, ETag conflict detection and history either way.

FILE is YAML or JSON holding one template, a list of templates, or ``{"templates": [...]}``.
``show`` starts its output with a comment ``# etag NAME: ETAG``; a FILE holding such a line
is applied only if NAME is still at that version (else: conflict), so ``show NAME > FILE``,
edit, ``apply FILE`` never overwrites a change someone made in between. Without the line,
``apply`` replaces whatever version is live.

Exit status: 0 done, 1 invalid or refused, 2 usage or connection problem, 3 conflict.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
import urllib.parse
import urllib.error
import urllib.request

from ..catalogue import (
    DEFAULT_CONFIGURER_CLASSES,
    DEFAULT_MAX_BYTES,
    DEFAULT_SPAWNER_CLASSES,
    CatalogueError,
    CataloguePolicy,
    is_identifier,
    parse_document,
)
from .store import Conflict, Forbidden, NotFound, TemplateStore, dump_yaml, etag_of


class Refused(Exception):
    """The service or the store refused the request; ``problems`` says why."""

    def __init__(self, message: str, problems=(), conflict: bool = False):
        super().__init__(message)
        self.problems = list(problems)
        self.conflict = conflict


class DirectoryBackend:
    """Templates in a catalogue directory, changed through :class:`TemplateStore`."""

    def __init__(self, directory: str, actor: str, policy: CataloguePolicy):
        self.store = TemplateStore(directory, policy=policy)
        self.actor = actor

    def list(self) -> list[dict]:
        return [{"name": e.name, "etag": e.etag, "spec": e.spec} for e in self.store.list()]

    def get(self, name: str) -> dict | None:
        try:
            e = self.store.get(name)
        except NotFound:
            return None
        return {"name": e.name, "etag": e.etag, "spec": e.spec}

    def problems(self, spec: dict) -> list[str]:
        try:
            self.store.validate({spec.get("name"): spec})
        except CatalogueError as e:
            return [str(p) for p in e.problems]
        return []

    def put(self, spec: dict, etag: str | None) -> None:
        try:
            self.store.put(spec["name"], spec, etag, self.actor)
        except CatalogueError as e:
            raise Refused("invalid template", e.problems)
        except (Conflict, Forbidden) as e:
            raise Refused(str(e), conflict=isinstance(e, Conflict))


class ServiceBackend:
    """The template editor service's REST API."""

    def __init__(self, url: str, token: str):
        self.url = url.rstrip("/") + "/api/"
        self.token = token

    def _call(self, method: str, path: str, body=None, etag: str | None = None):
        headers = {"Authorization": f"token {self.token}", "Content-Type": "application/json"}
        if etag:
            headers["If-Match"] = f'"{etag}"'
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read().decode()
                return response.status, json.loads(text) if text else {}
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                payload = json.loads(text)
            except ValueError:
                payload = {"message": text[:500]}
            return e.code, payload

    def list(self) -> list[dict]:
        status, data = self._call("GET", "templates")
        if status != 200:
            raise Refused(data.get("message", f"HTTP {status}"))
        return data["templates"]

    def get(self, name: str) -> dict | None:
        status, data = self._call("GET", f"templates/{urllib.parse.quote(name, safe='')}")
        if status == 404:
            return None
        if status != 200:
            raise Refused(data.get("message", f"HTTP {status}"))
        return data

    def problems(self, spec: dict) -> list[str]:
        status, data = self._call("POST", "validate", spec)
        if status != 200:
            raise Refused(data.get("message", f"HTTP {status}"))
        return data["problems"]

    def put(self, spec: dict, etag: str | None) -> None:
        if etag is None:
            status, data = self._call("POST", "templates", spec)
        else:
            status, data = self._call("PUT", f"templates/{urllib.parse.quote(spec['name'], safe='')}", spec, etag)
        if status >= 400:
            raise Refused(data.get("message", f"HTTP {status}"), data.get("problems", []), conflict=status == 409)


_ETAG_LINE = re.compile(r"^#\s*etag\s+([A-Za-z0-9._-]+):\s*([0-9a-f]+)\b", re.MULTILINE)


def etag_comment(name: str, etag: str) -> str:
    """The comment ``show`` puts first; :func:`read_templates` reads it back."""
    return f"# etag {name}: {etag}  (apply refuses this file if {name} changed since)\n"


def read_templates(path: str, policy: CataloguePolicy) -> tuple[list[dict], dict[str, str]]:
    """The templates in FILE (one, a list, or a combined document) and the versions they were
    based on (``{name: etag}`` from ``# etag NAME: ETAG`` comment lines; YAML only).

    Parsed as the catalogue is (size, depth, no YAML aliases); raises OSError if FILE cannot
    be read, CatalogueError or Refused if it is not templates, never another parsing error.
    """
    with open(path, "rb") as f:
        data = f.read(policy.max_bytes + 1)
    document = parse_document(data, path, policy)
    if isinstance(document, dict) and "templates" in document:
        document = document["templates"]
    if isinstance(document, dict):
        document = [document]
    if not isinstance(document, list) or not all(isinstance(t, dict) and is_identifier(t.get("name"))
                                                 for t in document):
        raise Refused(f"{path}: expected one template, a list of templates or {{templates: [...]}}, "
                      "each with a valid name")
    return document, dict(_ETAG_LINE.findall(data.decode()))  # parsed above: UTF-8, bounded


def _diff(name: str, old: dict | None, new: dict) -> str:
    return "".join(difflib.unified_diff(
        dump_yaml(old).splitlines(True) if old else [], dump_yaml(new).splitlines(True),
        fromfile=f"{name} (current)" if old else "/dev/null", tofile=f"{name} (file)",
    ))


def run(args, backend, out, policy: CataloguePolicy) -> int:
    if args.command == "list":
        for t in backend.list():
            spec = t["spec"]
            groups = ",".join((spec.get("access") or {}).get("groups", [])) or "everyone"
            state = "disabled" if spec.get("enabled") is False else "enabled"
            print(f"{t['name']:<24} {spec['resource_type']:<16} {state:<9} {groups}", file=out)
        return 0
    if args.command == "show":
        t = backend.get(args.name)
        if t is None:
            print(f"no template named {args.name!r}", file=sys.stderr)
            return 1
        print(etag_comment(t["name"], t["etag"]) + dump_yaml(t["spec"]), end="", file=out)
        return 0
    templates, based_on = read_templates(args.file, policy)
    if args.command == "validate":
        bad = 0
        for spec in templates:
            problems = backend.problems(spec)
            bad += bool(problems)
            print(f"{spec['name']}: {'ok' if not problems else 'INVALID'}", file=out)
            for p in problems:
                print(f"  {p}", file=out)
        return 1 if bad else 0
    if args.command == "diff":
        for spec in templates:
            current = backend.get(spec["name"])
            stale = _stale(spec["name"], based_on.get(spec["name"]), current)
            if stale:
                print(f"# {stale}", file=out)
            print(_diff(spec["name"], current and current["spec"], spec) or f"{spec['name']}: unchanged", file=out)
        return 0
    if args.command == "apply":
        status = 0
        for spec in templates:
            name = spec["name"]
            current = backend.get(name)
            if current and etag_of(current["spec"]) == etag_of(spec):
                print(f"{name}: unchanged", file=out)
                continue
            try:
                if current is None and name in based_on:
                    raise Refused(_stale(name, based_on[name], None), conflict=True)
                backend.put(spec, based_on.get(name) or (current["etag"] if current else None))
            except Refused as e:
                print(f"{name}: refused: {e}", file=out)
                for p in e.problems:
                    print(f"  {p}", file=out)
                status = max(status, 3 if e.conflict else 1)
                continue
            print(f"{name}: {'updated' if current else 'created'}", file=out)
        return status
    raise AssertionError(args.command)


def _stale(name: str, base: str | None, current: dict | None) -> str | None:
    """Why a file based on version ``base`` of ``name`` is out of date (None: it is not)."""
    if base is None or (current is not None and current["etag"] == base):
        return None
    now = f"it is now at {current['etag']}" if current else "it has been deleted"
    return f"{name} changed since this file was made from version {base} ({now}): apply refuses it"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="multiplespawner-templates", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="the editor service, e.g. http://127.0.0.1:8000/services/templates/ "
                                     "(token from $JUPYTERHUB_API_TOKEN)")
    where.add_argument("--catalogue-dir", help="work on this catalogue directory directly")
    p.add_argument("--actor", default=os.environ.get("USER", "cli"),
                   help="name recorded in the history for direct edits (default: $USER)")
    p.add_argument("--allowed-spawner-class", action="append", metavar="CLASS",
                   help="with --catalogue-dir: a spawner class templates may name (repeat; default: the "
                        "classes the suite supports, as c.MultipleSpawner.allowed_spawner_classes)")
    p.add_argument("--allowed-configurer-class", action="append", metavar="CLASS",
                   help="with --catalogue-dir: a configurer class templates may name (repeat; default: ansible)")
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                   help=f"largest template file or catalogue file read, in bytes (default {DEFAULT_MAX_BYTES})")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list templates")
    show = sub.add_parser("show", help="print one template as YAML")
    show.add_argument("name")
    for name, text in (("validate", "check FILE against the schema and the live catalogue"),
                       ("diff", "show how FILE differs from the live templates"),
                       ("apply", "create or update the templates in FILE")):
        sub.add_parser(name, help=text).add_argument("file")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    policy = CataloguePolicy(frozenset(args.allowed_spawner_class or DEFAULT_SPAWNER_CLASSES),
                             frozenset(args.allowed_configurer_class or DEFAULT_CONFIGURER_CLASSES),
                             max(args.max_bytes, 1024))
    try:
        if args.url:
            token = os.environ.get("JUPYTERHUB_API_TOKEN")
            if not token:
                print("set JUPYTERHUB_API_TOKEN to a token with the custom:templates:edit scope", file=sys.stderr)
                return 2
            backend = ServiceBackend(args.url, token)
        else:
            backend = DirectoryBackend(args.catalogue_dir, args.actor, policy)
        return run(args, backend, sys.stdout, policy)
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        for p in e.problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    except CatalogueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (OSError, urllib.error.URLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # the service answered something that is not JSON
        print(f"error: unexpected answer from the service: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
