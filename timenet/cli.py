"""The `timenet` command: train, eval, predict, demo.

    timenet train --data DIR [--categories a,b] [--preset small] --out RUN [--resume]
    timenet eval --run RUN --data DIR [--out RESULTS]
    timenet predict --run RUN IMAGE... [--category c] --out DIR
    timenet demo [--out DIR] [--preset tiny]

Errors a user can fix (a missing path, an empty class, a run from another
version) print one sentence and exit with status 2; --debug shows the
traceback instead.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

# MVTec-AD's groups, for the mean rows of the paper's Table 1.
MVTEC_GROUPS = {
    "textures": ["carpet", "grid", "leather", "tile", "wood"],
    "objects": ["bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw",
                "toothbrush", "transistor", "zipper"],
}


class UserError(Exception):
    """A problem with the command line or the files it names."""


def _add_common(p):
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--device", default="auto",
                   help="cpu, cuda, cuda:N, or auto (default: the GPU when there is one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _train_args(p):
    p.add_argument("--preset", default="small", choices=["tiny", "small", "paper"])
    p.add_argument("--image-size", type=int, default=0, help="default: the preset's")
    p.add_argument("--flow-steps", type=int)
    p.add_argument("--reflow-steps", type=int)
    p.add_argument("--reflow-pairs", type=int)
    p.add_argument("--tpn-steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--t", type=float, default=0.83, help="timestep of the one-step reconstruction")
    p.add_argument("--extractor", default="auto",
                   help="scoring backbone: auto (wide_resnet101_2 from $TIMENET_WEIGHTS), "
                        "pixel, or a torchvision name")
    p.add_argument("--fallback", default="pixel", choices=["pixel", "random"],
                   help="scoring when the backbone weights are missing")
    p.add_argument("--texture-dir", default=None, help="DTD-layout textures for the synthesis")
    p.add_argument("--autocast", action="store_true",
                   help="bf16 mixed precision for the training steps (a GPU only)")


def build_parser():
    ap = argparse.ArgumentParser(prog="timenet", description="One-step diffusion anomaly "
                                 "detection (TimeNet): one model for all classes.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("train", help="train all stages on an MVTec-AD style folder")
    p.add_argument("--data", required=True, help="dataset root (<class>/train/good/...)")
    p.add_argument("--format", default="mvtec", choices=["mvtec", "visa"],
                   help="dataset layout (visa: split_csv/1cls.csv)")
    p.add_argument("--categories", default=None, help="comma-separated (default: all)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    _train_args(p)
    _add_common(p)

    p = sub.add_parser("eval", help="per-class metrics of a trained run")
    p.add_argument("--run", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--format", default="mvtec", choices=["mvtec", "visa"])
    p.add_argument("--categories", default=None)
    p.add_argument("--out", default=None, help="results directory (default: RUN/results)")
    p.add_argument("--pictures", type=int, default=6, help="sample panels per class")
    _add_common(p)

    p = sub.add_parser("predict", help="anomaly maps and scores of new images")
    p.add_argument("--run", required=True)
    p.add_argument("images", nargs="+")
    p.add_argument("--category", default=None, help="class of the images (needed for "
                   "multi-class models)")
    p.add_argument("--out", required=True)
    _add_common(p)

    p = sub.add_parser("demo", help="build the demo data, train, evaluate, report")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--quick", action="store_true", help="a much shorter schedule (smoke test)")
    _train_args(p)
    p.set_defaults(preset="tiny")
    _add_common(p)
    return ap


def _config(args):
    from .pipeline import TimeNetConfig
    kw = dict(preset=args.preset, image_size=args.image_size, t=args.t, seed=args.seed,
              extractor=args.extractor, fallback=args.fallback, texture_dir=args.texture_dir,
              autocast=args.autocast)
    for k in ("flow_steps", "reflow_steps", "reflow_pairs", "tpn_steps", "batch_size"):
        if getattr(args, k) is not None:
            kw[k] = getattr(args, k)
    return TimeNetConfig(**kw)


def _dataset(root, categories, split, image_size, class_names=None, fmt="mvtec"):
    from .data import MVTecAD, VisA
    if not os.path.isdir(root):
        raise UserError(f"the dataset folder {root} does not exist")
    try:
        return (VisA if fmt == "visa" else MVTecAD)(
            root, categories=categories, split=split, image_size=image_size,
            class_names=class_names)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from e


def _device(args):
    """The resolved --device ('cpu' / 'cuda:N'), or a UserError saying why not."""
    from .pipeline import resolve_device
    try:
        device = resolve_device(args.device)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"--device {args.device}: {e}") from e
    if getattr(args, "autocast", False) and device == "cpu":
        raise UserError("--autocast needs a GPU (--device cuda); this run is on the CPU")
    return device


def _load_run(run, device):
    from .pipeline import TimeNet
    try:
        return TimeNet.load(run, device=device)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise UserError(f"cannot load the run {run}: {e}") from e


def cmd_train(args):
    from .pipeline import TimeNet
    cfg = _config(args)
    size = cfg.image_size or TimeNet(cfg).image_size
    ds = _dataset(args.data, args.categories, "train", size, fmt=args.format)
    device = _device(args)
    print(f"training on {len(ds)} images of {len(ds.categories)} classes "
          f"({', '.join(ds.categories)}) at {size} px, preset {cfg.preset}, on {device}")
    t0 = time.time()
    tn = TimeNet(cfg, device=device).fit(ds, out_dir=args.out, resume=args.resume)
    print(f"trained in {time.time() - t0:.0f} s; model saved to {args.out}")
    return tn


def _groups(names):
    return {g: m for g, m in MVTEC_GROUPS.items() if any(n in names for n in m)}


def write_eval(tn, ds, out_dir, pictures=6, title="timenet evaluation"):
    """Evaluate, print the table, write metrics.json/csv, panels and report.html."""
    from . import report
    res, pred = tn.evaluate(ds, return_predictions=True)
    print(report.format_table(res, _groups(tn.class_names)))
    report.write_metrics(res, out_dir)
    panels = report.write_panels(ds, pred, res, out_dir, per_class=pictures)
    curves = report.write_curves(ds, pred, out_dir)
    report.write_html(res, out_dir, panels, curves, title=title,
                      groups=_groups(tn.class_names), config=tn.config.to_dict())
    return res


def cmd_eval(args):
    tn = _load_run(args.run, _device(args))
    ds = _dataset(args.data, args.categories, "test", tn.image_size, tn.class_names, args.format)
    out = args.out or os.path.join(args.run, "results")
    res = write_eval(tn, ds, out, args.pictures)
    with open(os.path.join(args.run, "thresholds.json"), "w") as f:
        json.dump(res["thresholds"], f, indent=1)
    print(f"wrote {out}/metrics.json, metrics.csv, report.html")


def cmd_predict(args):
    from . import report
    from .data import load_image
    tn = _load_run(args.run, _device(args))
    if args.category is None and len(tn.class_names) > 1:
        raise UserError(f"--category is needed: the model knows {', '.join(tn.class_names)}")
    cat = args.category or tn.class_names[0]
    if cat not in tn.class_names:
        raise UserError(f"unknown category {cat!r}; the model knows {', '.join(tn.class_names)}")
    for p in args.images:
        if not os.path.isfile(p):
            raise UserError(f"the image {p} does not exist")
    thr_path = os.path.join(args.run, "thresholds.json")
    thr = None
    if os.path.exists(thr_path):
        with open(thr_path) as f:
            thr = (json.load(f).get(cat) or {}).get("pixel")
    try:
        x = np.stack([load_image(p, tn.image_size) for p in args.images])
    except ValueError as e:
        raise UserError(str(e)) from e
    pred = tn.predict(x, cat)
    os.makedirs(args.out, exist_ok=True)
    vmax = float(np.percentile(pred["map"], 99.5))
    with open(os.path.join(args.out, "scores.jsonl"), "w") as f:
        for i, p in enumerate(args.images):
            stem = os.path.splitext(os.path.basename(p))[0]
            img = report.predict_panel(x[i], pred["reconstruction"][i], pred["map"][i], thr, vmax)
            png = os.path.join(args.out, f"{stem}.png")
            img.save(png)
            line = {"image": p, "category": cat, "score": float(pred["score"][i]), "panel": png}
            f.write(json.dumps(line) + "\n")
            print(json.dumps(line))


def cmd_demo(args):
    from .data import demo
    from .pipeline import TimeNet
    cfg = _config(args)
    if args.quick:
        cfg.flow_steps, cfg.reflow_steps, cfg.reflow_pairs, cfg.tpn_steps = 60, 20, 10, 20
    size = cfg.image_size or TimeNet(cfg).image_size
    data_dir = os.path.join(args.out, "data")
    print(f"building the demo data in {data_dir} ({', '.join(demo.CLASSES)}, {size} px)")
    demo.build(data_dir, image_size=size, seed=args.seed)
    train = _dataset(data_dir, None, "train", size)
    device = _device(args)
    print(f"training preset {cfg.preset} on {device}")
    t0 = time.time()
    tn = TimeNet(cfg, device=device).fit(train, out_dir=os.path.join(args.out, "run"))
    print(f"trained in {time.time() - t0:.0f} s")
    test = _dataset(data_dir, None, "test", size, tn.class_names)
    res = write_eval(tn, test, os.path.join(args.out, "results"), title="timenet demo")
    with open(os.path.join(args.out, "run", "thresholds.json"), "w") as f:
        json.dump(res["thresholds"], f, indent=1)
    print(f"report: {os.path.join(args.out, 'results', 'report.html')}")


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "predict": cmd_predict, "demo": cmd_demo}


def main(argv=None):
    args = build_parser().parse_args(argv)
    import timenet
    if args.threads is not None:
        if args.threads < 1:
            print("timenet: --threads must be at least 1", file=sys.stderr)
            return 2
        timenet.set_num_threads(args.threads)
    try:
        COMMANDS[args.cmd](args)
    except UserError as e:
        if args.debug:
            raise
        print(f"timenet: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("timenet: interrupted (train --resume continues from the last checkpoint)",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
