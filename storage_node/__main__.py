import sys

from storage_node.server import main

sys.exit(main())
