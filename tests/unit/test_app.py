"""The serving process's own set-up (app.py); the gateway's parts are tested where they live."""

from __future__ import annotations

import subprocess
import sys

SERVING_PROCESS = """
import gc
from modelway.app import freeze_startup_heap
held = [[index] for index in range(1000)]
freeze_startup_heap()
print(gc.get_freeze_count() >= 1000, gc.get_threshold()[0])
"""


def test_a_serving_process_freezes_its_start_up_heap_and_collects_young_objects_less_often() -> None:
    # Its own process: the collector's settings are the whole process's, pytest's included.
    done = subprocess.run([sys.executable, "-c", SERVING_PROCESS], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "5000"]
