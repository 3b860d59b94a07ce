"""Imported once by the jobs service's forkserver: what every notebook runner needs.

Papermill, nbclient, jupyter_client and the IPython kernel (each run's kernel is a fork
of its runner), nbformat's compiled schema validator, and the libraries notebooks use
most, so a run's first cell does not pay for importing them either.
"""

import signal

from hubforge.forkserver import die_with_parent
from hubforge.jobs.runner import preload

die_with_parent(signal.SIGKILL)  # the forkserver goes when the jobs service goes
preload()
