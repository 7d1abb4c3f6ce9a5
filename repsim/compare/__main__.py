import sys

from repsim.compare.analysis import main

sys.exit(main())
