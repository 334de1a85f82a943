"""Per-class evaluation: the paper's Table 1 for one run.

From anomaly maps, image scores and ground truth to
{"classes": {name: {image_auroc, pixel_auroc, aupro, image_f1_max,
pixel_f1_max}}, "mean": {...}}, each metric from timenet.metrics (C).
"""
import numpy as np

from . import metrics
from .report import mean_row


def evaluate_maps(maps, scores, labels, masks, class_ids, class_names):
    """maps (N, H, W), scores (N,), labels (N,), masks (N, H, W) bool (None:
    no pixel ground truth, so no pixel metrics),
    class_ids (N,) -> results dict. A class without anomalous (or without
    normal) test images gets None for the metrics that are undefined there.
    results["thresholds"][name] holds the image and pixel F1-max thresholds
    (what `timenet predict` draws its contours at)."""
    maps, scores = np.asarray(maps), np.asarray(scores)
    labels, class_ids = np.asarray(labels), np.asarray(class_ids)
    masks = None if masks is None else np.asarray(masks)
    per, thresholds = {}, {}
    for cid in sorted(set(class_ids.tolist())):
        sel = class_ids == cid
        y, s, m = labels[sel], scores[sel], maps[sel]
        mk = None if masks is None else masks[sel]
        r = dict.fromkeys(("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max"))
        thr = {"image": None, "pixel": None}
        if 0 < y.sum() < len(y):
            r["image_auroc"] = metrics.auroc(s, y)
            r["image_f1_max"], thr["image"] = metrics.f1_max(s, y)
        if mk is not None and mk.any() and not mk.all():
            r["pixel_auroc"] = metrics.pixel_auroc(m, mk)
            r["aupro"] = metrics.aupro(m, mk)
            r["pixel_f1_max"], thr["pixel"] = metrics.f1_max(m.ravel(), mk.ravel())
        name = class_names[cid]
        per[name] = {k: (None if v is None else float(v)) for k, v in r.items()}
        thresholds[name] = {k: (None if v is None else float(v)) for k, v in thr.items()}
    return {"classes": per, "mean": mean_row(per), "thresholds": thresholds}
