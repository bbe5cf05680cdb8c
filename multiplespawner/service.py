"""What the suite's JupyterHub services share: where they listen, and a prompt, clean stop.

The template editor (:mod:`.editor`) and the fleet service (:mod:`.fleet`) are both tornado
applications started by the hub as managed services; this base gives them the address, port
and prefix the hub hands over in ``$JUPYTERHUB_SERVICE_URL``/``$JUPYTERHUB_SERVICE_PREFIX``,
the operator's class allow-lists (both read the catalogue the hub reads), and
:meth:`ServiceApp.serve`. Imports the catalogue, traitlets and tornado.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from urllib.parse import urlparse

from tornado import httpserver, ioloop, web
from traitlets import Float, Integer, List, Unicode, default
from traitlets.config import Application

from .catalogue import DEFAULT_CONFIGURER_CLASSES, DEFAULT_SPAWNER_CLASSES


class ServiceApp(Application):
    """Base of a hub-managed service: subclasses set ``default_url`` and ``default_prefix``
    and build their tornado application."""

    #: where the service listens when the hub does not say (no $JUPYTERHUB_SERVICE_URL)
    default_url = "http://127.0.0.1:10101"
    default_prefix = "/services/"

    aliases = {"ip": "ServiceApp.ip", "port": "ServiceApp.port"}

    ip = Unicode(help="Address to listen on (default: from $JUPYTERHUB_SERVICE_URL, else 127.0.0.1).").tag(config=True)

    @default("ip")
    def _ip_default(self):
        return urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", self.default_url)).hostname

    port = Integer(help="Port to listen on (default: from $JUPYTERHUB_SERVICE_URL, else the service's own).").tag(
        config=True)

    @default("port")
    def _port_default(self):
        return urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", self.default_url)).port or urlparse(
            self.default_url).port

    prefix = Unicode(help="URL prefix (default: $JUPYTERHUB_SERVICE_PREFIX, else /services/<name>/).").tag(config=True)

    @default("prefix")
    def _prefix_default(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", self.default_prefix)

    allowed_spawner_classes = List(
        Unicode(),
        list(DEFAULT_SPAWNER_CLASSES),
        help="""Spawner classes templates may name, exactly as written in ``spawner.class``
        (dotted paths or entry-point names). Keep it equal to the hub's
        ``c.MultipleSpawner.allowed_spawner_classes``, so the service reads the catalogue as the
        hub does: a template naming any other class is a catalogue problem (the editor refuses
        it with 400). Classes are looked up, never imported, in a service. The default lists the
        classes the suite supports; ``SimpleLocalProcessSpawner`` is absent on purpose (it runs
        notebooks as the hub's Unix user).""",
    ).tag(config=True)

    allowed_configurer_classes = List(
        Unicode(),
        list(DEFAULT_CONFIGURER_CLASSES),
        help="""Configurer classes templates may name in ``configurer.class``. Keep it equal to
        the hub's ``c.MultipleSpawner.allowed_configurer_classes``.""",
    ).tag(config=True)

    shutdown_timeout = Float(
        2.0,
        help="""Seconds the open connections get to close after SIGTERM or SIGINT (requests in
        flight are cut off after that); then the service exits. The hub waits for its managed
        services when it stops, so this bounds how long a hub restart waits for the service.""",
    ).tag(config=True)

    def serve(self, app: web.Application, max_body_size: int, what: str) -> None:
        """Serve ``app`` until SIGTERM or SIGINT, then stop promptly (see :meth:`_stop`).

        Bodies over ``max_body_size`` are cut off by tornado; ``what`` names the service in the log.
        """
        server = httpserver.HTTPServer(app, xheaders=True, max_body_size=max_body_size)
        server.listen(self.port, self.ip)
        self.log.info("%s on http://%s:%s%s", what, self.ip, self.port, self.prefix)
        loop = ioloop.IOLoop.current()
        for signum in (signal.SIGTERM, signal.SIGINT):
            # installed explicitly: a service started by a hub that was itself started in the
            # background inherits SIGINT *ignored*, and the hub's first signal is SIGINT
            loop.asyncio_loop.add_signal_handler(
                signum, lambda signum=signum: asyncio.ensure_future(self._stop(signum, server, app, loop))
            )
        loop.start()
        # Stopped: what is left is the interpreter's exit, whose final garbage collection of
        # this large heap took seconds on a busy host. The memory goes with the process.
        gc.freeze()

    async def _stop(self, signum: int, server: httpserver.HTTPServer, app: web.Application, loop) -> None:
        """Stop listening, close the open connections (idle keep-alive ones at once; waits at
        most ``shutdown_timeout``), let the worker threads (``settings["executor"]``) finish
        what they hold, end the loop."""
        self.log.info("Received %s, stopping", signal.Signals(signum).name)
        server.stop()
        try:
            await asyncio.wait_for(server.close_all_connections(), self.shutdown_timeout)
        except asyncio.TimeoutError:
            self.log.warning("Requests still open after %ss are cut off", self.shutdown_timeout)
        app.settings["executor"].shutdown(wait=False, cancel_futures=True)
        loop.stop()
