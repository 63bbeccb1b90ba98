"""``python -m cvat.tags``: masks from a CVAT task's (or job's) image tags, and optionally its boxes.

No CVAT route hands a model an image's class tags, so this reads them through cvat-sdk and
writes one mask shape per tag (the served configuration's tag mask: featcut's by default) and, with ``--boxes``,
per rectangle. Resumable like ``camcut bulk``: every finished frame is appended to a JSON-lines
state file, and a rerun skips the frames recorded there as done.

    CVAT_ACCESS_TOKEN=... python -m cvat.tags --server-host https://cvat.example --task 12 \
        --state tags-12.jsonl [--boxes] [--label-map map.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvat_sdk import models
from cvat_sdk.core.auth import configure_client_auth_arguments, make_client_from_cli
from cvat_sdk.masks import encode_mask

from backend.labels import LabelMap
from model import Box, BoxPrompt, ImageError, Technique, decode_image

from .engine import Engine, label_map

log = logging.getLogger("camcut.cvat.tags")
MASK_LABEL_TYPES = ("any", "mask")


@dataclass
class FrameReport:
    frame: int
    masks: int = 0
    warnings: list[str] = field(default_factory=list)


class State:
    """JSON lines ``{"target": "task:12", "frame": 3, "status": "done"|"failed", ...}``, fsynced."""

    def __init__(self, path: Path | None, target: str) -> None:
        self.path, self.target = path, target

    def done(self) -> set[int]:
        if self.path is None or not self.path.exists():
            return set()
        last: dict[int, str] = {}
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash
            if isinstance(rec, dict) and rec.get("target") == self.target and isinstance(rec.get("frame"), int):
                last[rec["frame"]] = str(rec.get("status"))
        return {f for f, s in last.items() if s == "done"}

    def append(self, rec: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = json.dumps({"target": self.target, **rec}, separators=(",", ":")) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


def _mask_label(label: Any, voc: str, labels: Sequence[Any], lmap: LabelMap) -> Any | None:
    """The tag's own label if it may carry a mask, else a mask-capable label of the same class."""
    if getattr(label, "type", "any") in MASK_LABEL_TYPES:
        return label
    for other in labels:
        if getattr(other, "type", "any") in MASK_LABEL_TYPES and lmap.resolve(other.name) == voc:
            return other
    return None


def run(
    client: Any,
    *,
    task_id: int | None = None,
    job_id: int | None = None,
    boxes: bool = False,
    state: Path | None = None,
    lmap: LabelMap | None = None,
    engine: Engine | None = None,
) -> list[FrameReport]:
    if (task_id is None) == (job_id is None):
        raise ValueError("give exactly one of task_id, job_id")
    lmap = lmap or label_map()
    if task_id is not None:
        target, obj, api_update = f"task:{task_id}", client.tasks.retrieve(task_id), client.tasks.api
        oid: int = task_id
    else:
        assert job_id is not None
        target, obj, api_update = f"job:{job_id}", client.jobs.retrieve(job_id), client.jobs.api
        oid = job_id
    labels = list(obj.get_labels())
    by_id = {lab.id: lab for lab in labels}
    ann = obj.get_annotations()
    work: dict[int, dict[str, list[Any]]] = {}
    for t in ann.tags:
        work.setdefault(t.frame, {"tags": [], "boxes": []})["tags"].append(t)
    if boxes:
        for s in ann.shapes:
            if str(s.type.value if hasattr(s.type, "value") else s.type) == "rectangle":
                work.setdefault(s.frame, {"tags": [], "boxes": []})["boxes"].append(s)
    st = State(state, target)
    done = st.done()
    engine = engine or Engine()
    reports = []
    for frame in sorted(work):
        if frame in done:
            continue
        rep = FrameReport(frame)
        try:
            shapes = _frame_shapes(obj, frame, work[frame], by_id, labels, lmap, engine, rep)
            if shapes:
                api_update.partial_update_annotations(
                    "create", oid, patched_labeled_data_request=models.PatchedLabeledDataRequest(shapes=shapes)
                )
            rep.masks = len(shapes)
            st.append({"frame": frame, "status": "done", "masks": rep.masks, "warnings": rep.warnings})
        except ImageError as exc:  # this frame only; the run goes on
            rep.warnings.append(f"frame {frame} skipped: {exc}")
            st.append({"frame": frame, "status": "failed", "error": str(exc)})
        for w in rep.warnings:
            log.warning("%s", w)
        reports.append(rep)
    return reports


def _frame_shapes(
    obj: Any,
    frame: int,
    items: dict[str, list[Any]],
    by_id: dict[int, Any],
    labels: Sequence[Any],
    lmap: LabelMap,
    engine: Engine,
    rep: FrameReport,
) -> list[models.LabeledShapeRequest]:
    data = obj.get_frame(frame, quality="original").read()
    seg = engine.set_image(decode_image(data))

    out: list[models.LabeledShapeRequest] = []

    def shape(label: Any, mask: Any) -> models.LabeledShapeRequest:
        return models.LabeledShapeRequest(
            type="mask",
            frame=frame,
            label_id=label.id,
            points=encode_mask(mask),
            source="auto",
            occluded=False,
            z_order=0,
            attributes=[],
        )

    tag_classes: list[tuple[Any, str]] = []
    for t in items["tags"]:
        lab = by_id.get(t.label_id)
        voc = lmap.resolve(lab.name) if lab is not None else None
        if voc is None:
            rep.warnings.append(f"frame {frame}: tag {getattr(lab, 'name', t.label_id)!r} has no camcut class; no mask")
            continue
        tag_classes.append((lab, voc))
    classes = [voc for _, voc in tag_classes]
    for (lab, voc), res in zip(tag_classes, seg.segment_classes([(c, None) for c in classes]), strict=True):
        target = _mask_label(lab, voc, labels, lmap)
        if isinstance(res, Exception) or not res.mask.any():
            why = res if isinstance(res, Exception) else res.fallback
            rep.warnings.append(f"frame {frame}: tag {lab.name!r}: no mask ({why})")
        elif target is None:
            rep.warnings.append(f"frame {frame}: tag {lab.name!r} is a tag-only label and no mask label names {voc!r}")
        else:
            out.append(shape(target, res.mask))
    prompts, box_labels = [], []
    for s in items["boxes"]:
        lab = by_id.get(s.label_id)
        voc = lmap.resolve(lab.name) if lab is not None else None
        tech = Technique("grabcut") if voc is None else None
        prompts.append(BoxPrompt(Box(*s.points[:4]), voc, tech))
        box_labels.append((lab, voc))
    for (lab, voc), res in zip(box_labels, seg.segment_boxes(prompts), strict=True):
        target = _mask_label(lab, voc or "", labels, lmap) if lab is not None else None
        if isinstance(res, Exception):
            rep.warnings.append(f"frame {frame}: box of {getattr(lab, 'name', '?')!r} skipped: {res}")
        elif target is None:
            rep.warnings.append(f"frame {frame}: box label {getattr(lab, 'name', '?')!r} cannot carry a mask")
        else:
            out.append(shape(target, res.mask))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cvat.tags", description=__doc__.split("\n\n")[0])
    configure_client_auth_arguments(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--task", type=int, help="CVAT task id")
    g.add_argument("--job", type=int, help="CVAT job id")
    p.add_argument("--boxes", action="store_true", help="also a mask per rectangle")
    p.add_argument("--state", type=Path, help="JSON-lines state file; a rerun skips its done frames")
    p.add_argument("--label-map", help="label -> VOC class JSON file (default: $CAMCUT_LABEL_MAP)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    client = make_client_from_cli(args)
    reports = run(client, task_id=args.task, job_id=args.job, boxes=args.boxes, state=args.state, lmap=label_map(args.label_map))
    masks = sum(r.masks for r in reports)
    print(json.dumps({"frames": len(reports), "masks": masks, "warnings": [w for r in reports for w in r.warnings]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
