"""Run ``python -m celestial_serve`` as the ``celestial-serve`` command."""

import sys

from celestial_serve.cli import main

sys.exit(main())
