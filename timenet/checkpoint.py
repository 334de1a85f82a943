"""Checkpoints: safetensors weights, a JSON sidecar, an optimizer side file.

A checkpoint at `path` = "run/last.safetensors" is three files:

    run/last.safetensors        the model's state_dict, PyTorch-style names
                                ("down.0.block.0.conv1.weight"), float32; its
                                safetensors metadata holds format/stage/step
    run/last.json               sidecar: model class, config (and preset),
                                class names, stage, step, training state
                                (rng state, ...) and any extra fields
    run/last.optim.safetensors  optional: AdamW moments ("m.<param name>",
                                "v.<param name>"), the loss history, and the
                                optimizer's step and hyper-parameters (metadata)

PyTorch users read the weights with `safetensors.torch.load_file`. Every
file is written atomically (a temporary file in the same folder, fsync,
`os.replace`), the sidecar last; each carries the step, and loading checks
that the three agree, so a crash between writes is detected rather than
silently mixing two steps. A truncated, foreign or mismatched file raises
ValueError naming the file.
"""
import json
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import safetensors.numpy as stnp

__all__ = ["save_checkpoint", "load_checkpoint", "load_model", "Checkpoint", "paths"]

FORMAT = "timenet-checkpoint"
VERSION = 1


def paths(path):
    """(weights, sidecar, optimizer) file names of the checkpoint at `path`."""
    path = os.fspath(path)
    base = path[:-len(".safetensors")] if path.endswith(".safetensors") else path
    return base + ".safetensors", base + ".json", base + ".optim.safetensors"


def _write_atomic(path, data: bytes):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_safetensors(path, what):
    if not os.path.exists(path):
        raise ValueError(f"{path}: {what} file not found")
    try:
        from safetensors import safe_open
        with safe_open(path, framework="np") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # SafetensorError, OSError: truncated or not safetensors
        raise ValueError(f"{path}: not a readable safetensors {what} file (truncated or "
                         f"foreign?): {e}") from e
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a timenet checkpoint (safetensors metadata format = "
                         f"{meta.get('format')!r}, expected {FORMAT!r})")
    return tensors, meta


def _optimizer_names(model, optimizer):
    """A name per optimizer parameter: the model's name when all are found."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    names = [by_id.get(id(p)) for p in optimizer.params]
    if None in names or len(set(names)) != len(names):
        return [str(i) for i in range(len(optimizer.params))]
    return names


def save_checkpoint(path, model, *, stage="flow", step=0, classes=None, optimizer=None,
                    train_state=None, losses=None, extra=None):
    """Write model (and optionally optimizer) to the checkpoint at `path`.

    stage: e.g. "flow", "reflow-1", "tpn"; step: the optimizer steps taken;
    classes: class names (list of str) in class-id order; train_state: a
    JSON-serialisable dict (the training rng state, ...); losses: the loss
    history (saved with the optimizer); extra: more JSON fields.
    Returns the weights path.
    """
    wpath, jpath, opath = paths(path)
    step = int(step)
    meta = {"format": FORMAT, "version": str(VERSION), "stage": str(stage), "step": str(step)}
    state = model.state_dict()
    weights = stnp.save({k: np.ascontiguousarray(v, np.float32) for k, v in state.items()},
                        metadata=meta)
    cfg = getattr(model, "config", None)
    sidecar = {
        "format": FORMAT, "version": VERSION, "model": type(model).__name__,
        "config": cfg.to_dict() if hasattr(cfg, "to_dict") else None,
        "preset": getattr(model, "preset", None),
        "classes": list(classes) if classes is not None else None,
        "stage": stage, "step": step,
        "num_parameters": int(model.num_parameters()),
        "optimizer": os.path.basename(opath) if optimizer is not None else None,
        "train_state": train_state,
    }
    if extra:
        sidecar["extra"] = extra
    text = json.dumps(sidecar, indent=1)

    blobs = [(wpath, weights)]
    if optimizer is not None:
        osd = optimizer.state_dict()
        names = _optimizer_names(model, optimizer)
        tensors = {}
        for n, m, v in zip(names, osd["m"], osd["v"]):
            tensors[f"m.{n}"] = np.ascontiguousarray(m, np.float32)
            tensors[f"v.{n}"] = np.ascontiguousarray(v, np.float32)
        if losses is not None and len(losses):
            tensors["train.losses"] = np.asarray(losses, np.float64)
        ometa = dict(meta, optimizer=type(optimizer).__name__, opt_step=str(osd["step"]),
                     hyper=json.dumps(osd["hyper"]), names=json.dumps(names))
        blobs.append((opath, stnp.save(tensors, metadata=ometa)))
    elif os.path.exists(opath):
        os.unlink(opath)  # a stale optimizer file from another step would mismatch
    for p, b in blobs:
        _write_atomic(p, b)
    _write_atomic(jpath, text.encode())
    return wpath


@dataclass
class Checkpoint:
    """What load_checkpoint read. `state` is the model's state_dict."""
    path: str
    state: dict
    sidecar: dict
    optimizer_state: Optional[dict] = None
    losses: list = field(default_factory=list)

    stage = property(lambda self: self.sidecar.get("stage"))
    step = property(lambda self: int(self.sidecar.get("step", 0)))
    classes = property(lambda self: self.sidecar.get("classes"))
    config = property(lambda self: self.sidecar.get("config"))
    train_state = property(lambda self: self.sidecar.get("train_state"))


def load_checkpoint(path, model=None, optimizer=None, strict=True):
    """Read the checkpoint at `path`; load it into `model` / `optimizer` if given.

    Raises ValueError naming the file for a missing, truncated or foreign
    file, or when the files disagree on the step.
    """
    wpath, jpath, opath = paths(path)
    state, meta = _read_safetensors(wpath, "weights")
    if not os.path.exists(jpath):
        raise ValueError(f"{jpath}: checkpoint sidecar (JSON) not found for {wpath}")
    try:
        with open(jpath, encoding="utf-8") as f:
            sidecar = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{jpath}: unreadable checkpoint sidecar (truncated?): {e}") from e
    if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT:
        raise ValueError(f"{jpath}: not a timenet checkpoint sidecar")
    if str(sidecar.get("step")) != meta.get("step") or sidecar.get("stage") != meta.get("stage"):
        raise ValueError(f"{jpath}: sidecar (stage {sidecar.get('stage')!r}, step "
                         f"{sidecar.get('step')}) does not match {wpath} (stage "
                         f"{meta.get('stage')!r}, step {meta.get('step')}): an interrupted save?")
    ck = Checkpoint(path=wpath, state=state, sidecar=sidecar)
    if sidecar.get("optimizer"):
        tensors, ometa = _read_safetensors(opath, "optimizer")
        if ometa.get("step") != meta.get("step"):
            raise ValueError(f"{opath}: optimizer state is for step {ometa.get('step')}, the "
                             f"weights for step {meta.get('step')}")
        names = json.loads(ometa["names"])
        try:
            ck.optimizer_state = {"step": int(ometa["opt_step"]),
                                  "m": [tensors[f"m.{n}"] for n in names],
                                  "v": [tensors[f"v.{n}"] for n in names],
                                  "hyper": json.loads(ometa["hyper"])}
        except KeyError as e:
            raise ValueError(f"{opath}: optimizer state lacks {e}") from e
        if "train.losses" in tensors:
            ck.losses = [float(v) for v in tensors["train.losses"]]
    if model is not None:
        model.load_state_dict(state, strict=strict)
    if optimizer is not None:
        if ck.optimizer_state is None:
            raise ValueError(f"{wpath}: checkpoint has no optimizer state")
        optimizer.load_state_dict(ck.optimizer_state)
    return ck


def load_model(path):
    """Build the model the sidecar describes and load its weights.
    Returns (model, checkpoint)."""
    ck = load_checkpoint(path)
    kind = ck.sidecar.get("model")
    if kind != "UNet" or not ck.config:
        raise ValueError(f"{paths(path)[1]}: cannot build a model of kind {kind!r}")
    from .models import UNet, UNetConfig
    model = UNet(UNetConfig.from_dict(ck.config))
    if ck.sidecar.get("preset"):
        object.__setattr__(model, "preset", ck.sidecar["preset"])
    model.load_state_dict(ck.state)
    return model, ck
