"""python -m bench: see bench/runner.py, or `python -m bench --help`."""

import sys

from bench.runner import main

sys.exit(main())
