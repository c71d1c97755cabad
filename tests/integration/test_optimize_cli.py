"""``tensorgate optimize`` end to end on the real ``digits`` model, its held-out set and labels."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tensorgate.cli.main import main
from tensorgate.examples.datasets import digits_split

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
#: The documented target: the accepted int8 variant loses at most half a point of accuracy.
MAX_ACCURACY_DROP = 0.005
#: Enough to exercise the measurement; speed is not asserted here.
FAST = ["--measure-seconds", "0.05", "--no-progress"]


@pytest.fixture(scope="module")
def digits_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The held-out images and labels, and some training images for calibration, as .npy files."""
    folder = tmp_path_factory.mktemp("digits-data")
    x_train, x_test, _, y_test = digits_split()
    paths = {"x": folder / "x_test.npy", "y": folder / "y_test.npy", "cal": folder / "cal.npy"}
    np.save(paths["x"], x_test)
    np.save(paths["y"], y_test)
    np.save(paths["cal"], x_train[:256])
    return paths


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository holding a copy of the example ``digits`` model (version 1 and config.toml)."""
    shutil.copytree(EXAMPLES / "digits", tmp_path / "digits")
    return tmp_path


def optimize(repo: Path, *args: str) -> int:
    return main(["optimize", "digits", "--model-repository", str(repo), *FAST, *args])


def read_report(repo: Path, version: int = 1) -> dict:
    return json.loads((repo / "digits" / str(version) / "variants" / "report.json").read_text())


def version_dirs(repo: Path) -> list[str]:
    return sorted(p.name for p in (repo / "digits").iterdir() if p.is_dir())


def test_report_measures_accuracy_on_the_real_held_out_set(
    repo: Path, digits_data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = optimize(
        repo,
        "--variants=graph,fp16,int8",
        f"--validation={digits_data['x']}",
        f"--labels={digits_data['y']}",
    )

    assert code == 0
    report = read_report(repo)
    x_test, y_test = np.load(digits_data["x"]), np.load(digits_data["y"])
    session = ort.InferenceSession(
        str(repo / "digits" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    expected = float((session.run(["label"], {"pixels": x_test})[0] == y_test).mean())
    assert report["validation"] == {
        "source": "file",
        "file": str(digits_data["x"]),
        "rows": len(x_test),
        "labels": str(digits_data["y"]),
    }
    assert report["original"]["accuracy"] == pytest.approx(expected)
    assert expected > 0.9
    variants = report["variants"]
    assert list(variants) == ["graph", "fp16", "int8"]
    for name, entry in variants.items():
        assert entry["status"] == "ok", entry
        assert (repo / "digits" / "1" / "variants" / name / "model.onnx").is_file()
        assert entry["metrics"]["accuracy_drop"] == pytest.approx(
            report["original"]["accuracy"] - entry["accuracy"]
        )
        assert entry["throughput"] > 0 and entry["latency_ms_p50"] > 0
    assert variants["graph"]["metrics"]["max_abs_diff"] <= 1e-5
    assert variants["fp16"]["metrics"]["max_abs_diff"] <= 1e-2
    assert variants["int8"]["metrics"]["top1_agreement"] >= 0.95
    assert variants["int8"]["metrics"]["accuracy_drop"] <= MAX_ACCURACY_DROP
    out = capsys.readouterr().out
    assert "original" in out and "int8" in out and "accuracy" in out
    assert f"validation inputs: {digits_data['x']} ({len(x_test)} rows)" in out
    assert version_dirs(repo) == ["1"], "without --accept nothing new is served"


def test_without_a_validation_file_the_report_says_inputs_were_random(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert optimize(repo, "--variants", "graph") == 0

    assert read_report(repo)["validation"]["source"] == "random"
    assert "validation inputs: random" in capsys.readouterr().out


def test_static_quantization_is_calibrated_on_the_given_rows(
    repo: Path, digits_data: dict[str, Path]
) -> None:
    code = optimize(
        repo,
        "--variants=int8-static",
        f"--calibration={digits_data['cal']}",
        f"--validation={digits_data['x']}",
        f"--labels={digits_data['y']}",
    )

    assert code == 0
    entry = read_report(repo)["variants"]["int8-static"]
    assert entry["status"] == "ok"
    assert entry["metrics"]["top1_agreement"] >= 0.95


def test_accept_promotes_the_only_variant_that_passes(
    repo: Path, digits_data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    source = repo / "digits" / "1" / "model.onnx"
    source_bytes = source.read_bytes()

    # Only the graph variant answers exactly like the original.
    code = optimize(
        repo,
        "--variants=graph,int8",
        f"--validation={digits_data['x']}",
        "--accept=max_abs_diff<=1e-6",
    )

    assert code == 0
    assert version_dirs(repo) == ["1", "2"]
    new = repo / "digits" / "2"
    assert (new / "model.onnx").read_bytes() == (
        repo / "digits" / "1" / "variants" / "graph" / "model.onnx"
    ).read_bytes()
    assert source.read_bytes() == source_bytes, "the original stays untouched"
    provenance = json.loads((new / "provenance.json").read_text())
    assert provenance["variant"] == "graph"
    assert provenance["source_version"] == 1
    assert provenance["source_digest"] == "sha256:" + hashlib.sha256(source_bytes).hexdigest()
    assert provenance["measured"]["metrics"]["max_abs_diff"] <= 1e-6
    report = read_report(repo)
    assert report["accept"] == {
        "criteria": "max_abs_diff<=1e-6",
        "selected": "graph",
        "new_version": 2,
    }
    assert report["variants"]["int8"]["accepted"] is False
    assert "accepted graph: new version 2" in capsys.readouterr().out


def test_accept_picks_the_fastest_of_those_that_pass(
    repo: Path, digits_data: dict[str, Path]
) -> None:
    code = optimize(
        repo,
        "--variants=graph,fp16,int8",
        f"--validation={digits_data['x']}",
        "--accept=top1_agreement>=0.9",
    )

    assert code == 0
    report = read_report(repo)
    passing = {n: e["throughput"] for n, e in report["variants"].items() if e["accepted"]}
    assert set(passing) == {"graph", "fp16", "int8"}
    fastest = max(passing, key=passing.__getitem__)
    assert report["accept"]["selected"] == fastest
    provenance = json.loads((repo / "digits" / "2" / "provenance.json").read_text())
    assert provenance["variant"] == fastest


def test_a_rule_no_variant_passes_leaves_the_served_versions_unchanged(
    repo: Path, digits_data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = optimize(
        repo,
        "--variants=graph,int8",
        f"--validation={digits_data['x']}",
        f"--labels={digits_data['y']}",
        "--accept=speedup>=1000,accuracy_drop<=0.005",
    )

    assert code == 1
    assert version_dirs(repo) == ["1"]
    assert not any(p.name.startswith(".") for p in (repo / "digits").iterdir())
    err = capsys.readouterr().err
    assert "no variant passes speedup>=1000,accuracy_drop<=0.005; nothing new is served" in err
    for name in ("graph", "int8"):
        assert f"  {name}: speedup=" in err and "fails speedup>=1000" in err
    assert read_report(repo)["accept"]["selected"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--variants=int8-static"], "int8-static needs calibration inputs"),
        (["--variants=int4"], "unknown variant(s) int4"),
        (["--accept=accuracy_drop<=0.005"], "accuracy_drop needs --labels"),
        (["--accept=fast"], "cannot read criterion 'fast'"),
        (["--version=7"], "no version 7"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    repo: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert optimize(repo, *args) == 2
    assert message in capsys.readouterr().err
    assert version_dirs(repo) == ["1"]


def test_labels_must_match_the_validation_rows(
    repo: Path, digits_data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = optimize(
        repo,
        "--variants=graph",
        f"--validation={digits_data['cal']}",
        f"--labels={digits_data['y']}",
    )

    assert code == 2
    assert "want one label per validation row (256)" in capsys.readouterr().err
