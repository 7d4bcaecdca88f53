import sys

from chester.cli import main

sys.exit(main())
