"""``python -m packager.cli``: the ``packager`` command."""

import sys

from packager.cli import main

sys.exit(main())
