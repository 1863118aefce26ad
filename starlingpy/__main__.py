import sys

from starlingpy.cli import main

sys.exit(main())
