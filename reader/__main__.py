import sys

from reader.server import main

sys.exit(main())
