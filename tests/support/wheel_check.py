"""`make wheel-check`: the `tensorgate` command of the client-only wheel, against a real server.

Run by the dev environment's Python with the client-only environment's ``bin`` folder as argument:
the server runs from the dev install, the commands under test from the light one (no ONNX Runtime,
no pydantic). Exits non-zero with the reason on the first command that does not do what a user of
``pip install tensorgate`` would expect.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tests.support.processes import serve

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60


def run(tensorgate: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tensorgate), *argv], capture_output=True, text=True, timeout=TIMEOUT_S, cwd="/tmp"
    )


def expect(done: subprocess.CompletedProcess[str], code: int, says: str) -> None:
    output = done.stdout + done.stderr
    if done.returncode != code or says not in output or "Traceback" in output:
        raise SystemExit(
            f"wheel-check: `{' '.join(done.args)}` exited {done.returncode} (want {code}, "
            f"saying {says!r}):\n{output}"
        )


def main(bin_dir: Path) -> int:
    tensorgate = bin_dir / "tensorgate"
    python = bin_dir / "python"
    light = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('onnxruntime'), u.find_spec('pydantic'))"],
        capture_output=True, text=True, timeout=TIMEOUT_S, check=True, cwd="/tmp",
    )  # fmt: skip
    if light.stdout.strip() != "None None":
        raise SystemExit(
            f"wheel-check: the client-only environment has server parts: {light.stdout}"
        )
    expect(run(tensorgate, "--help"), 0, "serve a model repository")
    expect(run(tensorgate, "--version"), 0, "tensorgate ")
    expect(run(tensorgate, "serve"), 2, "pip install 'tensorgate[server]'")
    with serve(REPO_ROOT / "examples" / "models", "--models", "digits") as server:
        expect(run(tensorgate, "models", "--target", server.target), 0, "digits")
        port = server.target.rsplit(":", 1)[1]
        expect(run(tensorgate, "health", "--port", port), 0, "SERVING")
        with tempfile.TemporaryDirectory() as folder:
            pixels = Path(folder) / "pixels.npy"
            np.save(pixels, np.zeros((2, 64), dtype=np.float32))
            done = run(tensorgate, "infer", "digits", "--input", f"pixels={pixels}", "--target", server.target)  # fmt: skip
            expect(done, 0, "label int64 [2]")
    print(
        "wheel-check: --help, --version, models, health and infer work from the client-only wheel"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
