"""``python -m t2po_cli`` is the same as ``t2po``."""

import sys

from t2po_cli.cli.app import main

sys.exit(main())
