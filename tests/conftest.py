"""Shared test setup: quick scale, no progress bars.

These are set before any notebook kernel starts, so nbval's kernels inherit them too.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("LECTURELIB_SCALE", "quick")
os.environ.setdefault("LECTURELIB_PROGRESS", "0")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
