import sys

from fastiov_lib.commands.cli import main

sys.exit(main())
