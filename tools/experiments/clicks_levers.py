"""Click-response levers of session 9 through the engine's clicks task (issue 12, NoC@85 from a box).

    FC="keep_far=2.0" X="{'negconn': 0.5}" IDS=/tmp/ids.txt \
        .venv/bin/python tools/experiments/clicks_levers.py --workers 1 --out DIR

``python -m evaluator.clicks --configs featcut`` with FeatCutParams overrides (FC, fields as Python
literals), experiment switches in ``FeatCutParams.extra`` (X, a Python dict literal) and, while
exploring, only the images listed in the file IDS (one id a line; the halves stay those of the
full split list, even / odd position). Everything else is the evaluator's. The session-9 switches of
README's ablation row "clicks (session 9 ...)" (mono, negconn, posconn, flip, corefit) lived in
model/featcut.py at commits 4b6b5e5 and f51b9b0 and are not kept: check one out to re-run them.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from clicks_crop import _params, run_clicks  # FC's parser; with CROP_SIDE unset that module patches nothing else

from evaluator import clicks
from evaluator.dataset import VocDataset
from model import cut as C
from model.featcut import FeatCutCut

_X = ast.literal_eval(os.environ.get("X", "{}"))
if os.environ.get("FC") or _X:  # at import: spawned workers import this module too
    _PARAMS = _params(os.environ.get("FC", ""), _X)
    C.CUTS["featcut"] = lambda config: FeatCutCut(_PARAMS)

if os.environ.get("IDS"):
    _keep = set(Path(os.environ["IDS"]).read_text().split())
    _orig_ids = VocDataset.ids
    _orig_init = clicks._init

    def _ids(self: VocDataset, split: str = "train") -> list[str]:
        return [i for i in _orig_ids(self, split) if i in _keep]

    def _init(*args: object, **kw: object) -> None:  # the halves of the full split list
        _orig_init(*args, **kw)  # type: ignore[arg-type]
        full = _orig_ids(clicks._W["ds"])
        clicks._W["halves"] = {i: k % 2 for k, i in enumerate(full)}

    VocDataset.ids = _ids  # type: ignore[method-assign]
    clicks._init = _init


if __name__ == "__main__":
    sys.exit(run_clicks(sys.argv[1:]))
