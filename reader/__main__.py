"""`python -m reader`: an instance process that starts as a reader.

An entry point, not a module anything imports: the instance host (instance/) sits above
writer/ and reader/, and only this file reaches up to it.
"""

import sys

from instance.server import main

sys.exit(main("reader"))
