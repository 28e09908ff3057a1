"""`python -m deepe_widgets.cli`: the `deepe` command."""

import sys

from . import main

sys.exit(main())
