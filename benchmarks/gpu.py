"""GPU benchmark of the paper preset (issue 8; benchmarks/gpu_check.sh runs it).

    python benchmarks/gpu.py                  # TF32 off and on
    python benchmarks/gpu.py --quick          # fewer steps, TF32 on only
    python benchmarks/gpu.py --torch-python /usr/bin/python3   # PyTorch side by side

On the first CUDA device, for the paper preset (29.8 M-parameter U-Net,
15 classes, 256x256):
- CUDA == CPU: one image through the denoiser on both, the largest
  difference relative to max |v|;
- training images/s: Rectified Flow steps (noise and x_t drawn on the host
  as timenet.flow does, forward, MSE, backward, clip_grad_norm_ 1.0, AdamW),
  and the peak GPU memory of the steady state; in float32 (TF32 off, on)
  and under bf16 autocast;
- one-step inference images/s: TimeNetModel (denoiser + TPN) under no_grad
  on the GPU, then pixel-level scoring (anomaly map, Gaussian filter, image
  score) with the host C kernels; the GPU and scoring parts timed apart;
  and again with the paper's feature scoring (WideResNet-101-2 layers 1-3,
  random weights: the speed is the same) on the GPU, distances, upsampling,
  F and the Gaussian with the device score kernels;
- PyTorch, when an interpreter with torch and a GPU is found (this one, or
  --torch-python): the same U-Net in PyTorch eager (our weights loaded into
  a mirror with the same parameter names, outputs compared), inference and
  training images/s at the same batch and TF32 setting, side by side.
Without a GPU it says so and exits 0 (make bench runs every benchmark).
Prints figures, asserts nothing.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

S, CLASSES, T = 256, 15, 0.83
PRESET = "paper"


def timed(fn, n, sync):
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        out = fn()
    sync()
    return (time.perf_counter() - t0) / n, out


# ---------------------------------------------------------------------------
# timenet

def check_against_cpu(model_cpu, model_gpu):
    from timenet import Tensor, no_grad
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (1, 3, S, S)).astype(np.float32)
    t, c = np.array([0.5], np.float32), np.array([3])
    with no_grad():
        t0 = time.perf_counter()
        v_cpu = model_cpu(Tensor(x), t, c).numpy()
        t_cpu = time.perf_counter() - t0
        v_gpu = model_gpu(Tensor(x, device="cuda"), t, c).numpy()
    err = float(np.abs(v_gpu - v_cpu).max() / np.abs(v_cpu).max())
    return err, t_cpu


def bench_training(model, batch, steps, warmup, autocast=False):
    from timenet import Tensor, cuda
    from timenet.nn import functional as F
    from timenet.nn.utils import clip_grad_norm_
    from timenet.optim import AdamW
    opt = AdamW(model.parameters(), lr=2e-4, weight_decay=0.0)
    rng = np.random.default_rng(0)
    x1 = rng.uniform(-1, 1, (batch, 3, S, S)).astype(np.float32)
    c = rng.integers(0, CLASSES, batch)

    def step():
        x0 = rng.standard_normal(x1.shape, dtype=np.float32)
        t = rng.uniform(1e-3, 1.0, batch).astype(np.float32)
        tb = t.reshape(-1, 1, 1, 1)
        with cuda.autocast(autocast):      # bf16 GEMMs; the backward keeps the state
            v = model(Tensor(tb * x1 + (1 - tb) * x0, device="cuda"), t, c)
            loss = F.mse_loss(v, Tensor(x1 - x0, device="cuda"))
        opt.zero_grad()
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    cuda.synchronize()
    cuda.reset_peak_memory_stats()
    dt, loss = timed(step, steps, cuda.synchronize)
    return batch / dt, cuda.max_memory_allocated(), float(loss.item())


def bench_inference(tnm, batch, steps, warmup, extractor=None):
    """One-step reconstruction (denoiser + TPN) on the GPU, then scoring:
    pixel-only (host kernels) or, with `extractor` (a backbone moved to the
    GPU), the paper's feature scoring with the device score kernels."""
    from timenet import Tensor, cuda, no_grad, scoring
    rng = np.random.default_rng(2)
    x1 = rng.uniform(-1, 1, (batch, 3, S, S)).astype(np.float32)
    c = rng.integers(0, CLASSES, batch)
    x_t, _ = tnm.noise(x1, T, rng)
    ratios = None
    if extractor is not None:   # stored-ratio mode, as TimeNet.predict scores
        ratios = scoring.Ratios({k: 1.0 for k in scoring.DEFAULT_LAYERS}, 1.0)

    def reconstruct():
        with no_grad():
            x1_hat, _ = tnm(Tensor(x_t, device="cuda"), T, c, use_tpn=True)
            return x1_hat.numpy()  # waits for the GPU

    def score(x1_hat):
        maps = scoring.anomaly_map(x1, x1_hat, extractor, ratios=ratios, batch_size=batch)
        return scoring.image_score(maps)

    for _ in range(warmup):
        score(reconstruct())
    cuda.reset_peak_memory_stats()
    dt_gpu, x1_hat = timed(reconstruct, steps, cuda.synchronize)
    dt_score, _ = timed(lambda: score(x1_hat), max(1, steps // 2), cuda.synchronize)
    return batch / (dt_gpu + dt_score), batch / dt_gpu, dt_score / batch, \
        cuda.max_memory_allocated()


def bench_unet_forward(den, batch, steps, warmup):
    """The denoiser alone, inputs already on the GPU: the PyTorch comparison."""
    from timenet import Tensor, cuda, no_grad
    rng = np.random.default_rng(3)
    x = Tensor(rng.uniform(-1, 1, (batch, 3, S, S)).astype(np.float32), device="cuda")
    t, c = np.full(batch, T, np.float32), rng.integers(0, CLASSES, batch)

    def fwd():
        with no_grad():
            return den(x, t, c)

    for _ in range(warmup):
        fwd()
    dt, _ = timed(fwd, steps, cuda.synchronize)
    return batch / dt


def run_timenet(args):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import timenet
    from timenet import cuda
    from timenet.models.tpn import TPN
    from timenet.models.unet import UNet
    from timenet.timenet_model import TimeNetModel
    if not cuda.is_available():
        print(f"gpu benchmark skipped: no CUDA device ({cuda.unavailable_reason()})")
        return None
    name = cuda.get_device_name()
    major, minor = cuda.get_device_capability()
    free, total = cuda.mem_get_info()
    print(f"device: {name} (sm_{major}{minor}), {total / 2**30:.1f} GiB; "
          f"host threads {timenet.get_num_threads()}")
    timenet.manual_seed(0)
    den_cpu = UNet.from_preset(PRESET, num_classes=CLASSES)
    den = UNet.from_preset(PRESET, num_classes=CLASSES)
    den.load_state_dict(den_cpu.state_dict())
    den.to("cuda")
    print(f"{PRESET} preset: {den.num_parameters() / 1e6:.1f} M parameters, {S}x{S}, "
          f"{CLASSES} classes")
    err, t_cpu = check_against_cpu(den_cpu, den)
    print(f"CUDA vs CPU, one image through the denoiser: max |diff| / max |v| = {err:.2e} "
          f"(CPU forward {t_cpu:.2f} s)")
    del den_cpu
    results = {"config": den.config.to_dict(), "rows": []}
    tnm = TimeNetModel(den, TPN.for_denoiser(den, t_init=T).to("cuda"), t_init=T)
    tnm.to("cuda")
    import warnings
    from timenet.models import backbones
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # random weights: the speed is what is measured
        wrn = backbones.create("wide_resnet101_2", weights=None).to("cuda")
    modes = [True] if args.quick else [False, True]
    for tf32 in modes:
        cuda.set_allow_tf32(tf32)
        tr, tr_mem, loss = bench_training(den, args.train_batch, args.steps, args.warmup)
        inf, inf_gpu, score_s, inf_mem = bench_inference(tnm, args.infer_batch, args.steps,
                                                         args.warmup)
        finf, _, fscore_s, finf_mem = bench_inference(tnm, args.infer_batch, args.steps,
                                                      args.warmup, wrn)
        fwd = bench_unet_forward(den, args.infer_batch, args.steps, args.warmup)
        row = {"tf32": tf32, "train": tr, "train_mem": tr_mem, "infer": inf,
               "infer_gpu": inf_gpu, "score_ms": 1e3 * score_s, "infer_mem": inf_mem,
               "unet_forward": fwd, "infer_features": finf,
               "feature_score_ms": 1e3 * fscore_s, "infer_features_mem": finf_mem}
        results["rows"].append(row)
        print(f"TF32 {'on ' if tf32 else 'off'}: training {tr:7.1f} images/s (batch "
              f"{args.train_batch}, peak {tr_mem / 2**30:.2f} GiB, loss {loss:.3f}); one-step "
              f"inference {inf:7.1f} images/s (batch {args.infer_batch}: denoiser+TPN "
              f"{inf_gpu:.1f} images/s on the GPU, pixel scoring {1e3 * score_s:.2f} ms/image "
              f"on the host; peak {inf_mem / 2**30:.2f} GiB); denoiser forward alone "
              f"{fwd:.1f} images/s")
        print(f"          with WRN-101-2 feature scoring on the GPU: {finf:7.1f} images/s "
              f"(scoring {1e3 * fscore_s:.2f} ms/image, peak {finf_mem / 2**30:.2f} GiB)")
    tr, tr_mem, loss = bench_training(den, args.train_batch, args.steps, args.warmup,
                                      autocast=True)
    results["rows"].append({"tf32": True, "autocast": True, "train": tr, "train_mem": tr_mem})
    print(f"bf16 autocast (TF32 on for the rest): training {tr:7.1f} images/s (batch "
          f"{args.train_batch}, peak {tr_mem / 2**30:.2f} GiB, loss {loss:.3f})")
    cuda.set_allow_tf32(False)
    stats = cuda.memory_stats()
    print(f"allocator: {stats['num_device_allocs']} cudaMallocs for {stats['num_allocs']} "
          f"allocations, {stats['reserved_bytes'] / 2**30:.2f} GiB reserved, peak reserved "
          f"{stats['peak_reserved_bytes'] / 2**30:.2f} GiB")
    state = {k: v for k, v in den.state_dict().items()}
    return results, state


# ---------------------------------------------------------------------------
# PyTorch (imports only torch and numpy: may run under another interpreter)

def torch_unet(cfg):
    import math

    import torch
    from torch import nn
    from torch.nn import functional as TF

    def tstep(t, dim):
        half = dim // 2
        f = torch.exp(-torch.arange(half, device=t.device, dtype=torch.float64)
                      * (math.log(10000.0) / (half - 1)))
        a = t.double()[:, None] * f[None]
        return torch.cat([torch.sin(a), torch.cos(a)], 1).float()

    class Res(nn.Module):
        def __init__(self, cin, cout, temb, G):
            super().__init__()
            self.cin, self.cout = cin, cout
            self.norm1 = nn.GroupNorm(G, cin, eps=1e-6)
            self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
            self.temb_proj = nn.Linear(temb, cout)
            self.norm2 = nn.GroupNorm(G, cout, eps=1e-6)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
            if cin != cout:
                self.nin_shortcut = nn.Conv2d(cin, cout, 1)

        def forward(self, x, e):
            h = self.conv1(TF.silu(self.norm1(x)))
            h = h + self.temb_proj(e)[:, :, None, None]
            h = self.conv2(TF.silu(self.norm2(h)))
            return (self.nin_shortcut(x) if self.cin != self.cout else x) + h

    class Attn(nn.Module):
        def __init__(self, C):
            super().__init__()
            self.qkv = nn.Conv2d(C, 3 * C, 1)
            self.proj = nn.Conv2d(C, C, 1)

        def forward(self, x):
            N, C, H, W = x.shape
            q, k, v = self.qkv(x).reshape(N, 3, 1, C, H * W).permute(1, 0, 2, 4, 3)
            h = TF.scaled_dot_product_attention(q, k, v)[:, 0]
            return self.proj(h.permute(0, 2, 1).reshape(N, C, H, W))

    class AttnBlock(nn.Module):
        def __init__(self, C, G):
            super().__init__()
            self.norm = nn.GroupNorm(G, C, eps=1e-6)
            self.attn = Attn(C)

        def forward(self, x):
            return x + self.attn(self.norm(x))

    class Sample(nn.Module):
        def __init__(self, C, down):
            super().__init__()
            self.down = down
            self.conv = nn.Conv2d(C, C, 3, stride=2 if down else 1, padding=1)

        def forward(self, x):
            return self.conv(x if self.down else TF.interpolate(x, scale_factor=2,
                                                                mode="nearest"))

    class Level(nn.Module):
        pass

    class UNet(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            ch, G, mult = cfg["base_channels"], cfg["norm_groups"], tuple(cfg["channel_mult"])
            nrb, attn_res, L = cfg["num_res_blocks"], tuple(cfg["attn_resolutions"]), len(mult)
            te = 4 * ch
            self.ch, self.L = ch, L
            self.temb = nn.Module()
            self.temb.dense = nn.ModuleList([nn.Linear(ch, te), nn.Linear(te, te)])
            self.class_emb = nn.Embedding(cfg["num_classes"], te)
            self.conv_in = nn.Conv2d(cfg["in_channels"], ch, 3, padding=1)
            res, in_mult, bi = cfg["image_size"], (1,) + mult, ch
            self.down = nn.ModuleList()
            for i in range(L):
                lvl = Level()
                lvl.block, lvl.attn = nn.ModuleList(), nn.ModuleList()
                bi, bo = ch * in_mult[i], ch * mult[i]
                for _ in range(nrb):
                    lvl.block.append(Res(bi, bo, te, G))
                    bi = bo
                    if res in attn_res:
                        lvl.attn.append(AttnBlock(bi, G))
                if i != L - 1:
                    lvl.downsample = Sample(bi, True)
                    res //= 2
                self.down.append(lvl)
            self.mid = nn.Module()
            self.mid.block_1 = Res(bi, bi, te, G)
            self.mid.attn_1 = AttnBlock(bi, G)
            self.mid.block_2 = Res(bi, bi, te, G)
            ups = []
            for i in reversed(range(L)):
                lvl = Level()
                lvl.block, lvl.attn = nn.ModuleList(), nn.ModuleList()
                bo, skip = ch * mult[i], ch * mult[i]
                for j in range(nrb + 1):
                    if j == nrb:
                        skip = ch * in_mult[i]
                    lvl.block.append(Res(bi + skip, bo, te, G))
                    bi = bo
                    if res in attn_res:
                        lvl.attn.append(AttnBlock(bi, G))
                if i != 0:
                    lvl.upsample = Sample(bi, False)
                    res *= 2
                ups.append(lvl)
            self.up = nn.ModuleList(reversed(ups))
            self.norm_out = nn.GroupNorm(G, bi, eps=1e-6)
            self.conv_out = nn.Conv2d(bi, cfg["out_channels"] or cfg["in_channels"], 3,
                                      padding=1)

        def forward(self, x, t, c):
            d0, d1 = self.temb.dense
            e = d1(TF.silu(d0(tstep(t * 999.0, self.ch)))) + self.class_emb(c)
            e = TF.silu(e)
            hs = [self.conv_in(x)]
            for i, lvl in enumerate(self.down):
                for j, blk in enumerate(lvl.block):
                    h = blk(hs[-1], e)
                    if len(lvl.attn):
                        h = lvl.attn[j](h)
                    hs.append(h)
                if i != self.L - 1:
                    hs.append(lvl.downsample(hs[-1]))
            h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], e)), e)
            for i in reversed(range(self.L)):
                lvl = self.up[i]
                for j, blk in enumerate(lvl.block):
                    h = blk(torch.cat([h, hs.pop()], 1), e)
                    if len(lvl.attn):
                        h = lvl.attn[j](h)
                if i != 0:
                    h = lvl.upsample(h)
            return self.conv_out(TF.silu(self.norm_out(h)))

    return UNet(cfg)


def run_torch(path, args):
    try:
        import torch
        from torch.nn.functional import mse_loss as torch_mse
    except ImportError:
        print("PyTorch side by side skipped: torch is not installed for this interpreter")
        return
    if not torch.cuda.is_available():
        print("PyTorch side by side skipped: torch sees no CUDA device")
        return
    global S
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        S = int(meta["config"]["image_size"])
        state = {k[2:]: torch.from_numpy(z[k]) for k in z.files if k.startswith("w:")}
        x_check, v_check = z["x_check"], z["v_check"]
    dev = torch.device("cuda")
    model = torch_unet(meta["config"]).to(dev)
    model.load_state_dict(state, strict=True)
    torch.backends.cudnn.benchmark = True
    sync = torch.cuda.synchronize
    with torch.no_grad():
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        v = model(torch.from_numpy(x_check).to(dev), torch.tensor([0.5], device=dev),
                  torch.tensor([3], device=dev)).cpu().numpy()
    err = float(np.abs(v - v_check).max() / np.abs(v_check).max())
    print(f"PyTorch {torch.__version__} (cuDNN {torch.backends.cudnn.version()}) vs timenet, one "
          f"image, our weights: max |diff| / max |v| = {err:.2e}")
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.0)
    rng = np.random.default_rng(0)
    for row in meta["rows"]:
        tf32, amp = row["tf32"], row.get("autocast", False)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        B = args.train_batch
        x1 = torch.from_numpy(rng.uniform(-1, 1, (B, 3, S, S)).astype(np.float32)).to(dev)
        c = torch.from_numpy(rng.integers(0, CLASSES, B)).to(dev)

        def step():
            x0 = torch.randn_like(x1)
            t = torch.rand(B, device=dev) * (1 - 1e-3) + 1e-3
            tb = t[:, None, None, None]
            with torch.autocast("cuda", torch.bfloat16, enabled=amp):
                loss = torch_mse(model(tb * x1 + (1 - tb) * x0, t, c), x1 - x0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            return loss

        for _ in range(args.warmup):
            step()
        torch.cuda.reset_peak_memory_stats()
        dt, _ = timed(step, args.steps, sync)
        tr, tr_mem = B / dt, torch.cuda.max_memory_allocated()
        if amp:
            print(f"bf16 autocast: training timenet {row['train']:7.1f} vs PyTorch {tr:7.1f} "
                  f"images/s ({row['train'] / tr:.2f}x; peak {row['train_mem'] / 2**30:.2f} "
                  f"vs {tr_mem / 2**30:.2f} GiB)")
            continue
        Bi = args.infer_batch
        xi = torch.from_numpy(rng.uniform(-1, 1, (Bi, 3, S, S)).astype(np.float32)).to(dev)
        ti = torch.full((Bi,), T, device=dev)
        ci = torch.from_numpy(rng.integers(0, CLASSES, Bi)).to(dev)

        def infer():
            with torch.no_grad():
                return model(xi, ti, ci)

        for _ in range(args.warmup):
            infer()
        torch.cuda.reset_peak_memory_stats()
        dti, _ = timed(infer, args.steps, sync)
        fw = Bi / dti
        print(f"TF32 {'on ' if tf32 else 'off'}: training       timenet {row['train']:7.1f} vs "
              f"PyTorch {tr:7.1f} images/s ({row['train'] / tr:.2f}x; peak "
              f"{row['train_mem'] / 2**30:.2f} vs {tr_mem / 2**30:.2f} GiB)")
        print(f"          U-Net inference timenet {row['unet_forward']:7.1f} vs PyTorch "
              f"{fw:7.1f} images/s ({row['unet_forward'] / fw:.2f}x; batch {Bi}, "
              f"peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB in PyTorch)")


# ---------------------------------------------------------------------------

def find_torch_python(explicit):
    for py in ([explicit] if explicit else []) + [sys.executable, "python3"]:
        try:
            ok = subprocess.run([py, "-c", "import torch, numpy"], capture_output=True,
                                timeout=120).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return py
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps, TF32 on only")
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--infer-batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--torch-python", default=None, help="an interpreter with torch")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--torch-side", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--preset", default="paper", help=argparse.SUPPRESS)  # dry runs
    args = ap.parse_args()
    if args.steps is None:
        args.steps = 4 if args.quick else 10
    if args.torch_side:  # torch and numpy only: no timenet in this process
        run_torch(args.torch_side, args)
        return
    global S, PRESET
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from timenet.models.unet import PRESETS
    PRESET, S = args.preset, PRESETS[args.preset]["image_size"]
    out = run_timenet(args)
    if out is None or args.no_torch:
        return
    results, state = out
    py = find_torch_python(args.torch_python)
    if py is None:
        print("PyTorch side by side skipped: no interpreter with torch found "
              "(pass --torch-python)")
        return
    from timenet import Tensor, no_grad
    from timenet.models.unet import UNet
    den = UNet(UNet.from_preset(PRESET, num_classes=CLASSES).config)
    den.load_state_dict(state)
    den.to("cuda")
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, S, S)).astype(np.float32)
    with no_grad():
        v = den(Tensor(x, device="cuda"), np.array([0.5], np.float32), np.array([3])).numpy()
    del den
    from timenet import cuda
    cuda.empty_cache()  # leave the GPU's memory to the PyTorch process
    meta = {"config": results["config"], "rows": results["rows"]}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "unet.npz")
        np.savez(path, meta=json.dumps(meta), x_check=x, v_check=v,
                 **{f"w:{k}": a for k, a in state.items()})
        cmd = [py, os.path.abspath(__file__), "--torch-side", path,
               "--train-batch", str(args.train_batch), "--infer-batch", str(args.infer_batch),
               "--steps", str(args.steps), "--warmup", str(args.warmup)]
        sys.stdout.flush()
        subprocess.run(cmd, check=False)


if __name__ == "__main__":
    main()
