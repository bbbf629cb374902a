"""What every server process does before it serves (sixfold/serving.py)."""

from __future__ import annotations

import subprocess
import sys

from sixfold import serving


def test_a_server_process_freezes_its_start_up_objects_and_collects_less_often() -> None:
    # In a process of its own: frozen objects stay frozen, and this one is pytest's.
    probe = (
        "import gc; from sixfold import serving; before = gc.get_freeze_count(); "
        "serving.tune_gc(); print(before, gc.get_freeze_count(), *gc.get_threshold())"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    before, frozen, young, older, oldest = map(int, out)
    assert before == 0 and frozen > 10_000  # the imported modules: gRPC's, protobuf's, ours
    assert young == serving.GC_YOUNG_OBJECTS_MAX > 700  # above Python's default
    assert (older, oldest) == (10, 10)  # the older generations keep Python's defaults
