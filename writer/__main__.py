import sys

from writer.server import main

sys.exit(main())
