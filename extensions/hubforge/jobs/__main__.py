"""``python -m hubforge.jobs``: the ``jobs`` hub service (`hubforge.jobs.service`).

Run as a package ``__main__`` on purpose: the service forks its runners from a
multiprocessing forkserver, and every forked child re-imports the parent's main module
(the whole service, a second of imports) unless it is a ``__main__`` module.
"""

from hubforge.jobs.service import main

if __name__ == "__main__":
    main()
