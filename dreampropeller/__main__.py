"""`python -m dreampropeller` runs the command line."""

import sys

from dreampropeller.cli import main

sys.exit(main())
