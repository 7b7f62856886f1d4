"""``python -m ngxffi``: the same as the ``ngxffi`` command."""

import sys

from ngxffi.cli import main

sys.exit(main())
