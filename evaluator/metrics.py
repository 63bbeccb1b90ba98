"""The report's class-wise binary metrics (formulas 4-8) and the standard 21-class mIoU.

Class-wise binary (report section 5.4): every prediction is a binary mask for one class i (one
object's mask in the object task, one class's mask in the class task), compared with the
binary ground truth of that object / class over the image's non-void pixels. TP_i, FP_i, FN_i,
TN_i are summed over the whole dataset, then
    IoU_i = TP / (TP + FP + FN)                              (4)
    Acc_i = (TP + TN) / (TP + FP + TN + FN)                  (5)
    mIoU  = mean_i IoU_i                                      (6)
    fwIoU = sum_i t_i IoU_i / sum_k t_k, t_i = TP_i + FN_i    (7)
    mAcc  = mean_i Acc_i                                      (8)
The means run over the N classes that occur in the data (a class never seen has no IoU).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_CLASSES = 20


@dataclass
class BinaryCounts:
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray

    @classmethod
    def zeros(cls, n: int = N_CLASSES) -> BinaryCounts:
        return cls(*(np.zeros(n, np.int64) for _ in range(4)))

    def add(self, class_index: int, pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> None:
        """Accumulate one binary prediction; ``class_index`` is 0-based (VOC label - 1)."""
        p = pred[valid]
        g = gt[valid]
        tp = int(np.count_nonzero(p & g))
        fp = int(np.count_nonzero(p)) - tp
        fn = int(np.count_nonzero(g)) - tp
        self.tp[class_index] += tp
        self.fp[class_index] += fp
        self.fn[class_index] += fn
        self.tn[class_index] += p.size - tp - fp - fn

    def __iadd__(self, other: BinaryCounts) -> BinaryCounts:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.tn += other.tn
        return self

    @property
    def seen(self) -> np.ndarray:
        return (self.tp + self.fn) > 0

    def iou(self) -> np.ndarray:
        den = self.tp + self.fp + self.fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.seen, self.tp / np.maximum(den, 1), np.nan)

    def acc(self) -> np.ndarray:
        den = self.tp + self.fp + self.tn + self.fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.seen, (self.tp + self.tn) / np.maximum(den, 1), np.nan)

    def summary(self) -> dict[str, float]:
        iou, acc = self.iou(), self.acc()
        t = (self.tp + self.fn).astype(np.float64)
        return {
            "mIoU": float(np.nanmean(iou)) if self.seen.any() else float("nan"),
            "fwIoU": float(np.nansum(t * np.nan_to_num(iou)) / t.sum()) if t.sum() else float("nan"),
            "mAcc": float(np.nanmean(acc)) if self.seen.any() else float("nan"),
        }


@dataclass
class Confusion:
    """Standard semantic-segmentation confusion matrix (21 labels, void ignored)."""

    m: np.ndarray

    @classmethod
    def zeros(cls, n: int = N_CLASSES + 1) -> Confusion:
        return cls(np.zeros((n, n), np.int64))

    def add(self, pred_labels: np.ndarray, gt_labels: np.ndarray, valid: np.ndarray) -> None:
        n = self.m.shape[0]
        idx = gt_labels[valid].astype(np.int64) * n + pred_labels[valid].astype(np.int64)
        self.m += np.bincount(idx, minlength=n * n).reshape(n, n)

    def __iadd__(self, other: Confusion) -> Confusion:
        self.m += other.m
        return self

    def iou(self) -> np.ndarray:
        tp = np.diag(self.m).astype(np.float64)
        den = self.m.sum(0) + self.m.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.m.sum(1) > 0, tp / np.maximum(den, 1), np.nan)

    def miou(self) -> float:
        return float(np.nanmean(self.iou()))
