"""``python -m sgilo.flows.cli``: the ``sgilo`` command."""

import sys

from sgilo.flows.cli import main

sys.exit(main())
