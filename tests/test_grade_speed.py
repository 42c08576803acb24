"""What a grade costs (issue 27, issue 31 item 4): start-up, worker starts, repeated work.

No timings here (benchmarks/grade_time.py measures them): each test checks the cause of a
cost, so it fails when the cost comes back.
"""

from __future__ import annotations

import subprocess
import sys


def test_the_grade_command_imports_no_torch() -> None:
    """`dl-ch2 grade` of a NumPy submission costs what `python -m conformance grade` does:
    building the CLI and parsing `grade` imports neither torch nor the port's modules."""
    code = (
        "import sys\n"
        "from dl_ch2_tools.cli import build_parser\n"
        "args = build_parser().parse_args(['grade', 'numpy', '--dtype', 'float64'])\n"
        "assert args.command == 'grade'\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('dl_ch2.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_train_options_still_name_their_choices() -> None:
    """--rmsprop's choices are read lazily, and still refuse an unknown variant."""
    from dl_ch2_tools.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "--rmsprop", "keras-3"]).rmsprop == "keras-3"
    out = subprocess.run(
        [sys.executable, "-m", "dl_ch2_tools.cli", "train", "--rmsprop", "keras-9"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2 and "'keras-2.6', 'keras-3'" in out.stderr, out.stderr
