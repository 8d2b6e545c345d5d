"""python -m samjax.evaluate TASK ...: see samjax.evaluate.cli."""

import sys

from samjax.evaluate.cli import main

sys.exit(main())
