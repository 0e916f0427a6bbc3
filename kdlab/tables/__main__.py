import sys

from kdlab.tables.cli import main

sys.exit(main())
