"""Pictures and tables: heat-map panels, the per-class metric table.

Panels are plain PNGs (Pillow): input | reconstruction | heat-map overlay |
ground truth, one row per image, so a person can see at a glance what the
model repaired and where it looked.
"""
import json
import os

import numpy as np
from PIL import Image, ImageDraw

METRICS = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max")
HEADERS = ("I-AUROC", "P-AUROC", "AUPRO", "I-F1max", "P-F1max")


def to_uint8(x):
    """(3, H, W) float in [-1, 1] -> (H, W, 3) uint8."""
    return ((np.asarray(x).transpose(1, 2, 0) + 1) * 127.5).clip(0, 255).astype(np.uint8)


def colormap(v):
    """A perceptual 'inferno'-like ramp: v (H, W) in [0, 1] -> (H, W, 3) uint8."""
    stops = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]],
                     np.float32)
    v = np.clip(np.asarray(v, np.float32), 0, 1) * (len(stops) - 1)
    i = np.minimum(v.astype(int), len(stops) - 2)
    f = (v - i)[..., None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def heat_overlay(image, amap, vmax, alpha=0.5):
    """Blend the anomaly map (scaled by vmax, shared across a panel) over the image."""
    rgb = to_uint8(image).astype(np.float32)
    heat = colormap(np.asarray(amap) / max(vmax, 1e-12)).astype(np.float32)
    return (rgb * (1 - alpha) + heat * alpha).astype(np.uint8)


def panel(images, recons, maps, masks=None, titles=None, scale=2, vmax=None):
    """One row per image: input | reconstruction | overlay | mask (if given)."""
    n = len(images)
    vmax = float(np.percentile(maps, 99.5)) if vmax is None else vmax
    rows = []
    for i in range(n):
        cols = [to_uint8(images[i]), to_uint8(recons[i]), heat_overlay(images[i], maps[i], vmax)]
        if masks is not None:
            cols.append(np.repeat((np.asarray(masks[i]) > 0)[..., None] * 255, 3, 2).astype(np.uint8))
        rows.append(np.concatenate([np.pad(c, ((1, 1), (1, 1), (0, 0))) for c in cols], 1))
    img = Image.fromarray(np.concatenate(rows, 0))
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    if titles:
        head = Image.new("RGB", (img.width, 14 * scale // 2 + 6), (255, 255, 255))
        d = ImageDraw.Draw(head)
        w = img.width // len(titles)
        for j, t in enumerate(titles):
            d.text((j * w + 4, 2), t, fill=(0, 0, 0))
        out = Image.new("RGB", (img.width, img.height + head.height), (255, 255, 255))
        out.paste(head, (0, 0))
        out.paste(img, (0, head.height))
        img = out
    return img


def format_table(results, groups=None):
    """results: {"classes": {name: {metric: value}}, "mean": {...}} -> text table
    (classes as rows, values in percent). groups: optional {group: [names]} adds a
    mean row per group before the overall mean, as the paper's Table 1."""
    names = list(results["classes"])
    width = max([len(n) for n in names] + [8])
    line = f"{'class':<{width}}  " + "  ".join(f"{h:>7}" for h in HEADERS)
    out = [line, "-" * len(line)]

    def row(name, vals):
        return f"{name:<{width}}  " + "  ".join(
            f"{100 * vals[m]:7.1f}" if vals.get(m) is not None else f"{'-':>7}" for m in METRICS)
    out += [row(n, results["classes"][n]) for n in names]
    out.append("-" * len(line))
    for g, members in (groups or {}).items():
        members = [m for m in members if m in results["classes"]]
        if members:
            out.append(row(f"mean {g}", mean_row({m: results["classes"][m] for m in members})))
    out.append(row("mean", results["mean"]))
    return "\n".join(out)


def mean_row(per_class):
    out = {}
    for m in METRICS:
        vals = [v[m] for v in per_class.values() if v.get(m) is not None]
        out[m] = float(np.mean(vals)) if vals else None
    return out


def write_metrics(results, out_dir):
    """metrics.json ({"classes": {...}, "mean": {...}}) and metrics.csv."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(out_dir, "metrics.csv"), "w") as f:
        f.write("class," + ",".join(METRICS) + "\n")
        for name, vals in list(results["classes"].items()) + [("mean", results["mean"])]:
            f.write(name + "," + ",".join("" if vals.get(m) is None else f"{vals[m]:.6f}"
                                          for m in METRICS) + "\n")
