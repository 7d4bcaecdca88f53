"""``python -m chester.target status|cancel|tail ...``: the target tool."""

import sys

from chester.target.tool import main

if __name__ == "__main__":
    sys.exit(main())
