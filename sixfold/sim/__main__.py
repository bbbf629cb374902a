"""`python -m sixfold.sim --seed N`: replay one seeded simulation (sixfold/sim/simulation.py)."""

import sys

from sixfold.sim.simulation import main

sys.exit(main())
