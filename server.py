#!/usr/bin/env python3
"""Run the starlingpy CLI from a checkout: `python server.py serve -p 22122`."""

import sys

from starlingpy.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["serve"]))
