"""The benchmark's PNG needs matplotlib, which only the ``bench`` extra installs: without it the
benchmark says so in one line instead of a traceback."""

from __future__ import annotations

import subprocess
import sys


def test_draw_png_without_matplotlib_raises_one_clear_line() -> None:
    code = (
        "import sys\n"
        "sys.modules['matplotlib'] = None\n"
        "from tensorgate.tools.bench.report import PlottingUnavailable, draw_png\n"
        "try:\n"
        "    draw_png({'runs': []}, None)\n"
        "except PlottingUnavailable as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout == "no PNG: matplotlib is not installed (pip install 'tensorgate[bench]')\n"
    )
