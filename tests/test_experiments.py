"""The experiment scripts the README quotes still start and run against the engine (one image each)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VOC = ROOT.parent / "shared" / "voc2012" / "VOC2012"

RUNS = {  # script -> (arguments for one image, a line its output must contain)
    "box.py": (["1", "1"], "images 1 objects"),
    "diag.py": (["--limit", "1", "--step", "1"], "mean obj IoU fpf7"),
    "tagdiag.py": (["--limit", "1", "--step", "1"], "FP share"),
    "tta.py": (["1"], "1 images,"),
    "grabcut_cost.py": (["--sides", "100", "--runs", "1"], "100 px ("),
    "featcut_negative.py": (["0", "2"], "objects; mean IoU before / GrabCut / featcut"),
    "tag_score.py": (["--limit", "1"], "tags with a CAM"),
    "speed_box.py": (["--images", "3"], "|   min_cut_and_relaxed |"),
    "box_select.py": (["--limit", "1", "--variant", "base:", "--variant", "lam8:lam=8"], "pick by confidence"),
    "box_empty.py": (["--limit", "1"], "objects, 0 empty"),
    "engine_levers.py": (["box", "--limit", "1", "--variant", "base:"], "pick by confidence"),
    "tags_speed.py": (["--limit", "1", "--variant", "base:", "--variant", "cam:start=cam"], "1 images, 2 tags"),
    "cvat_interactor.py": (["--limit", "1", "--configs", "featcut,default"], "1 images, 4 objects, mean IoU"),
}


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "experiments" / script), *args, "--voc", str(VOC)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


# The feature-cut and tag scripts of README "The feature cut" need a CNN cache or minutes of CPU
# for one figure: here they are started (``--help``) or, for the tag scripts (positional
# arguments, or libraries of the others), imported against today's engine.
STARTS = ("featcut_box.py", "featcut_clicks.py")
# needs a Dask cluster it starts itself (minutes): started with --help only
# learn_prior: collects 140 images (tens of minutes); clicks_crop, clicks_levers: the clicks task (minutes an image set);
# score_head: collects all 205 images' corrections (minutes); speed_memory: the bench's 96 requests
# (a minute); speed_score: six second opinions of the 579 boxes (minutes)
HELPS = (
    "clicks_crop.py",
    "clicks_levers.py",
    "dask_task_overhead.py",
    "learn_prior.py",
    "score_head.py",
    "speed_memory.py",
    "speed_score.py",
)
IMPORTS = (
    "box_perclass.py",
    "tags_bg.py",
    "tags_boxcore.py",
    "tags_cache.py",
    "tags_common.py",
    "tags_cut.py",
    "tags_empty.py",
    "tags_empty_engine.py",
    "tags_engine.py",
    "tags_latency.py",
    "tags_prop.py",
    "tags_zoom.py",
)


def test_every_kept_script_is_tested() -> None:
    assert sorted(p.name for p in (ROOT / "tools" / "experiments").glob("*.py")) == sorted([*RUNS, *STARTS, *HELPS, *IMPORTS])


@pytest.mark.parametrize("script, expected", [*((s, "--variant") for s in STARTS), *((s, "usage:") for s in HELPS)])
def test_script_starts(script: str, expected: str) -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "experiments" / script), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and expected in r.stdout, r.stderr


def test_tag_scripts_import() -> None:
    code = "import sys; sys.path[:0] = ['tools/experiments', '.']; " + "; ".join(f"import {m[:-3]}" for m in IMPORTS)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("script", sorted(RUNS))
def test_experiment_runs_on_one_image(script: str) -> None:
    args, expected = RUNS[script]
    help_ = run(script, "--help")
    assert help_.returncode == 0 and "usage:" in help_.stdout, help_.stderr[-2000:]
    p = run(script, *args)
    assert p.returncode == 0, p.stderr[-3000:]
    assert expected in p.stdout, p.stdout[-2000:]


def test_try_configs_scores_an_unregistered_configuration(tmp_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "try_configs.py"), "{'c320': dict(cnn_max_side=320)}", "1", "grabcut", "0.5"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "c320         object grabcut" in p.stdout and "mIoU" in p.stdout, p.stdout
    from model.engine import CONFIGS

    assert "c320" not in CONFIGS
