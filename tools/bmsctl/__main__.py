import sys

from tools.bmsctl.cli import main

sys.exit(main())
