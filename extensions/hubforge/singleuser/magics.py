"""IPython magics of HubForge's notebook side.

`MAGICS` lists every Magics class that ``load_ipython_extension`` registers;
a capability adding magics (data, Dask, jobs) appends its class there. Each
magic stays a thin wrapper over the Python function a script would call.
"""

from __future__ import annotations

from typing import Any

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..dask.magics import DaskMagics
from ..data.magics import DataMagics
from ..jobs.magics import JobsMagics
from .info import ServerInfo, server_info


@magics_class
class HubForgeMagics(Magics):
    """``%hubforge``: what this notebook server is."""

    @magic_arguments()
    @argument(
        "--json",
        action="store_true",
        help="Return the information as a dict instead of a table.",
    )
    @line_magic
    def hubforge(self, line: str) -> ServerInfo | dict[str, Any]:
        """Show this server's user, profile, image, CPU, memory and GPUs.

        The table is the one `hubforge.singleuser.info.server_info` builds from
        the environment the hub gave this server; the profile's environment
        variables are listed by name only. Outside HubForge it says so.

        Examples::

            %hubforge
            info = %hubforge --json
            info["resources"]["memory"]["limit"]
        """
        args = parse_argstring(self.hubforge, line)
        info = server_info()
        if args.json:
            return info
        return ServerInfo(info)


MAGICS: list[type[Magics]] = [HubForgeMagics, DataMagics, DaskMagics, JobsMagics]
