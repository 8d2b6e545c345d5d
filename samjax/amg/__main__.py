"""python -m samjax.amg: see samjax.amg.cli."""

import sys

from samjax.amg.cli import main

if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
