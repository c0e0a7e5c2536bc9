"""Code-execution entry point: ``python main.py [--data-dir /data] [--output-dir /code_execution]``.

See ``runtime/cli.py`` (or ``python main.py --help``) for options and exit codes.
"""

import sys

from runtime.cli import main

if __name__ == "__main__":
    sys.exit(main())
