"""``python -m scratchvae`` runs the command line (scratchvae/cli.py)."""
import sys

from .cli import main

sys.exit(main())
