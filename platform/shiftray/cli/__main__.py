"""python -m shiftray.cli"""

import sys

from shiftray.cli import main

sys.exit(main())
