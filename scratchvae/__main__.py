"""``python -m scratchvae`` runs the command line (scratchvae/cli.py).

SIGTERM (``kill PID``) stops a command as Ctrl-C does: as an exception, so that
a write in progress removes its temporary file and a new run its empty directory.
"""
import signal
import sys

from .cli import main

signal.signal(signal.SIGTERM, signal.default_int_handler)
sys.exit(main())
