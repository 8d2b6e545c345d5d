"""python -m samjax.annotate: see samjax.annotate."""

import sys

from samjax.annotate.server import main

if __name__ == "__main__":
    sys.exit(main())
