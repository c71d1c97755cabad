"""``python -m tensorgate.server``: one worker (or ``--workers N``), configured like ``tensorgate serve``."""

import sys

from tensorgate.server.process import main

sys.exit(main())
