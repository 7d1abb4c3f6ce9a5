"""``python -m repsim.datasets [info [NAME ...] | download NAME [--root DIR]]``."""

import sys

from repsim.datasets.cli import main

sys.exit(main())
