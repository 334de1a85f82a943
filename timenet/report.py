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


def panel(images, recons, maps, masks=None, titles=None, scale=None, vmax=None):
    """One row per image: input | reconstruction | overlay | mask (if given).
    scale: pixel repeat (default: enough to make each image at least 128 px)."""
    n = len(images)
    scale = max(2, 128 // images.shape[-1]) if scale is None else scale
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


def contour(mask):
    """The one-pixel outline of a boolean mask (8-neighbourhood)."""
    m = np.asarray(mask, bool)
    p = np.pad(m, 1, mode="edge")
    inner = np.ones_like(m)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            inner &= p[1 + dy:1 + dy + m.shape[0], 1 + dx:1 + dx + m.shape[1]]
    return m & ~inner


def predict_panel(image, recon, amap, threshold=None, vmax=None, scale=None):
    """input | reconstruction | heat-map overlay | contour at `threshold`
    (the class's pixel F1-max threshold; omitted when unknown)."""
    vmax = float(np.max(amap)) if vmax is None else vmax
    scale = max(2, 128 // image.shape[-1]) if scale is None else scale
    cols = [to_uint8(image), to_uint8(recon), heat_overlay(image, amap, vmax)]
    if threshold is not None:
        c = to_uint8(image).copy()
        c[contour(np.asarray(amap) > threshold)] = (255, 32, 32)
        cols.append(c)
    row = np.concatenate([np.pad(col, ((1, 1), (1, 1), (0, 0))) for col in cols], 1)
    img = Image.fromarray(row)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def _pick(labels, defects, k):
    """Up to k indices: one per defect kind first, then more anomalous, then normal."""
    order, seen = [], set()
    for i, d in enumerate(defects):
        if labels[i] and d not in seen:
            seen.add(d)
            order.append(i)
    order += [i for i in range(len(labels)) if labels[i] and i not in order]
    normal = [i for i in range(len(labels)) if not labels[i]]
    out = order[:max(0, k - 1)] + normal[:1]
    return (out + [i for i in order if i not in out])[:k]


def write_panels(ds, pred, results, out_dir, per_class=6):
    """One panel per class (input | reconstruction | overlay | ground truth)
    under out_dir/panels/<class>.png; returns {class: relative path}."""
    os.makedirs(os.path.join(out_dir, "panels"), exist_ok=True)
    labels = ds.labels
    masks = ds.masks() if getattr(ds, "has_masks", True) else None
    defects = [s.defect for s in ds.samples]
    vmax = float(np.percentile(pred["map"], 99.5))
    out = {}
    for name in results["classes"]:
        idx = np.nonzero(np.array([s.category == name for s in ds.samples]))[0]
        if not len(idx):
            continue
        pick = idx[_pick(labels[idx], [defects[i] for i in idx], per_class)]
        x = ds.images()[pick]
        titles = ["input", "reconstruction", "anomaly map"] + (["ground truth"] if masks is not None else [])
        img = panel(x, pred["reconstruction"][pick], pred["map"][pick],
                    None if masks is None else masks[pick], titles=titles, vmax=vmax)
        rel = os.path.join("panels", f"{name}.png")
        img.save(os.path.join(out_dir, rel))
        out[name] = rel
    return out


def write_curves(ds, pred, out_dir):
    """Image ROC and PRO curves per class (matplotlib, optional): returns
    {class: relative path}, empty when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    from . import metrics
    os.makedirs(os.path.join(out_dir, "curves"), exist_ok=True)
    labels = ds.labels
    masks = ds.masks() if getattr(ds, "has_masks", True) else None
    cats = np.array([s.category for s in ds.samples])
    out = {}
    for name in dict.fromkeys(cats):
        sel = cats == name
        y, m = labels[sel], None if masks is None else masks[sel]
        if not 0 < y.sum() < len(y):
            continue
        pixel = m is not None and m.any()
        fig, axes = plt.subplots(1, 2 if pixel else 1, figsize=(7 if pixel else 3.6, 3.2),
                                 squeeze=False)
        a = axes[0, 0]
        fpr, tpr, _ = metrics.roc_curve(pred["score"][sel], y)
        a.plot(fpr, tpr, color="#c0392b")
        a.plot([0, 1], [0, 1], ":", color="grey")
        a.set(title=f"{name}: image ROC (AUROC {100 * metrics.auroc(pred['score'][sel], y):.1f})",
              xlabel="FPR", ylabel="TPR")
        if pixel:
            b = axes[0, 1]
            pf, pro, _ = metrics.pro_curve(pred["map"][sel], m, max_fpr=0.3)
            keep = pf <= 0.3
            b.plot(pf[keep], pro[keep], color="#2471a3")
            b.set(title=f"PRO up to FPR 0.3 (AUPRO {100 * metrics.aupro(pred['map'][sel], m):.1f})",
                  xlabel="FPR", ylabel="PRO", xlim=(0, 0.3), ylim=(0, 1))
        for ax in axes.ravel():
            ax.title.set_fontsize(8)
        fig.tight_layout()
        rel = os.path.join("curves", f"{name}.png")
        fig.savefig(os.path.join(out_dir, rel), dpi=100)
        plt.close(fig)
        out[name] = rel
    return out


def write_html(results, out_dir, panels, curves, title="timenet", groups=None, config=None):
    """A static report.html: the table, the curves and the panels per class."""
    import html

    def cell(v):
        return "<td>-</td>" if v is None else f"<td>{100 * v:.1f}</td>"
    rows = "".join(f"<tr><th>{html.escape(n)}</th>{''.join(cell(v.get(m)) for m in METRICS)}</tr>"
                   for n, v in results["classes"].items())
    for g, members in (groups or {}).items():
        members = [m for m in members if m in results["classes"]]
        if members:
            r = mean_row({m: results["classes"][m] for m in members})
            rows += f"<tr class=mean><th>mean {g}</th>{''.join(cell(r.get(m)) for m in METRICS)}</tr>"
    rows += (f"<tr class=mean><th>mean</th>"
             f"{''.join(cell(results['mean'].get(m)) for m in METRICS)}</tr>")
    parts = [f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>",
             "<style>body{font:14px sans-serif;margin:2em;max-width:1100px}"
             "table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #ddd;"
             "text-align:right}th{text-align:left}tr.mean{font-weight:bold}"
             "img{max-width:100%;image-rendering:pixelated}</style>",
             f"<h1>{html.escape(title)}</h1>",
             "<table><tr><th>class</th>" + "".join(f"<th>{h}</th>" for h in HEADERS) + "</tr>",
             rows, "</table>"]
    if not curves:
        parts.append("<p><i>ROC / PRO curves need matplotlib (pip install matplotlib).</i></p>")
    for name in results["classes"]:
        parts.append(f"<h2>{html.escape(name)}</h2>")
        if name in curves:
            parts.append(f"<img src='{curves[name]}' alt='curves of {html.escape(name)}'><br>")
        if name in panels:
            parts.append(f"<img src='{panels[name]}' alt='panels of {html.escape(name)}'>")
    if config:
        parts.append("<h2>configuration</h2><pre>" + html.escape(json.dumps(config, indent=1))
                     + "</pre>")
    path = os.path.join(out_dir, "report.html")
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return path
