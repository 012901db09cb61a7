"""``python -m lecturelib.report``: the environment of a build (device, versions), as text.

``make book`` writes it to ``reports/build_environment.txt``, which the book's "Build report" page
shows next to the execution statistics.
"""

from __future__ import annotations

import datetime

from .device import environment


def environment_report() -> str:
    lines = [f"built: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}"]
    lines += [f"{key}: {value}" for key, value in environment().items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(environment_report())
