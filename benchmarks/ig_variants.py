"""Integrated Gradients: how to batch targets and which arithmetic, measured (GPU first).

The design study behind ``doll.explanation.ig``: one classifier (``build_classifier``, random
init, eval mode, 14 classes), N seeded noise images, the first T classes of each as targets
(T = 3 and 14), 16 Gauss-Legendre steps, zero baseline. Three ways to get T maps per image:

* ``replicated``: every (image, target) pair gets its own interpolation path (Captum's
  batched-targets way): one forward + one backward per chunk of ``bs`` points;
* ``shared-vmap``: one forward per chunk of images, the T backward passes batched with
  ``torch.autograd.grad(..., is_grads_batched=True)`` (doll's engine on the CPU);
* ``shared-loop``: one forward per chunk, T backward passes in a loop over the retained
  graph (doll's engine on CUDA);

each under float32 (cuDNN TF32 on), bfloat16 or float16 autocast (``x1024``: backward seeded
with 1024, as doll does). The reference is ``replicated`` in strict float32 (TF32 off).
One JSON line per way: ``s_per_img`` (after a warm-up on two images), ``max_rel_diff`` (worst
map's max|a - b| / max|ref|), and the completeness error |sum IG - (f(x) - f(b))| / |f(x) - f(b)|
(median, p90) that ``doll explain`` also reports.

    python benchmarks/ig_variants.py cuda densenet121 224 32
    python benchmarks/ig_variants.py cpu resnet18 32 4       # smoke run on the CPU
"""
import functools
import json
import sys
import time

import torch

from doll.explanation.ig import gauss_legendre
from doll.models.classifier import build_classifier

dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")
arch, size, N = (sys.argv[2], int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else ("densenet121", 224, 32)
torch.manual_seed(0)
model = build_classifier(arch, 14).to(dev).eval()
for p in model.parameters():
    p.requires_grad_(False)
if dev.type == "cuda":
    model = model.to(memory_format=torch.channels_last)
g = torch.Generator().manual_seed(0)
X = ((torch.rand(N, 1, size, size, generator=g) - 0.5) / 0.25).to(dev)
B = torch.full_like(X, -2.0)
STEPS = 16
al, w = gauss_legendre(STEPS)
al = torch.tensor(al, dtype=torch.float32, device=dev); w = torch.tensor(w, dtype=torch.float32, device=dev)

def sync():
    if dev.type == "cuda": torch.cuda.synchronize()

def replicated(x, b, targets, bs, dtype, scale=1.0):
    """every (image, target) pair gets its own path; chunks of bs points; one fwd+bwd per chunk"""
    pairs = [(i, c) for i in range(len(x)) for c in targets[i]]
    out = torch.zeros(len(pairs), *x.shape[-2:], device=dev)
    per = max(1, bs // STEPS)
    for s in range(0, len(pairs), per):
        pp = pairs[s:s + per]
        ii = torch.tensor([p[0] for p in pp], device=dev); cc = torch.tensor([p[1] for p in pp], device=dev)
        xi, bi = x[ii], b[ii]
        pts = (bi[:, None] + al[None, :, None, None, None] * (xi - bi)[:, None]).reshape(-1, *x.shape[1:])
        pts = pts.contiguous(memory_format=torch.channels_last).requires_grad_(True)
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            lg = model(pts).float()
        sel = lg.gather(1, cc.repeat_interleave(STEPS)[:, None]).sum() * scale
        (gr,) = torch.autograd.grad(sel, pts)
        gr = gr.float().reshape(len(pp), STEPS, *x.shape[1:]) / scale
        out[s:s + len(pp)] = ((gr * w[None, :, None, None, None]).sum(1) * (xi - bi)).sum(1)
    return out

def shared(x, b, targets, bs, dtype, scale=1.0, vmap=False):
    """shared forward per chunk of images; the target slots' backward passes in a loop over
    the retained graph, or batched with vmap (``vmap=True``)"""
    pairs = [(i, c) for i in range(len(x)) for c in targets[i]]
    out = torch.zeros(len(pairs), *x.shape[-2:], device=dev)
    pos = {p: k for k, p in enumerate(pairs)}
    per = max(1, bs // STEPS)
    for s in range(0, len(x), per):
        idx = list(range(s, min(len(x), s + per)))
        xi, bi = x[idx], b[idx]
        pts = (bi[:, None] + al[None, :, None, None, None] * (xi - bi)[:, None]).reshape(-1, *x.shape[1:])
        pts = pts.contiguous(memory_format=torch.channels_last).requires_grad_(True)
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            lg = model(pts).float()
        T = max(len(targets[i]) for i in idx)
        go = torch.zeros(T, *lg.shape, device=dev)
        for t in range(T):
            for j, i in enumerate(idx):
                if t < len(targets[i]):
                    go[t, j * STEPS:(j + 1) * STEPS, targets[i][t]] = scale
        if vmap:
            (gr,) = torch.autograd.grad(lg, pts, grad_outputs=go, is_grads_batched=True)
        else:
            gr = torch.stack([torch.autograd.grad(lg, pts, grad_outputs=go[t], retain_graph=t < T - 1)[0]
                              for t in range(T)])
        for t in range(T):
            a = ((gr[t].float().reshape(len(idx), STEPS, *x.shape[1:]) / scale * w[None, :, None, None, None]).sum(1)
                 * (xi - bi)).sum(1)
            for j, i in enumerate(idx):
                if t < len(targets[i]):
                    out[pos[(i, targets[i][t])]] = a[j]
    return out


shared_loop = shared
shared_vmap = functools.partial(shared, vmap=True)


def timeit(fn, *a):
    fn(X[:2], B[:2], TG[:2], *a)
    sync(); t = time.perf_counter(); r = fn(X, B, TG, *a); sync()
    return r, (time.perf_counter() - t) / N

res = []
for T in (3, 14):
    TG = [list(range(T)) for _ in range(N)]
    torch.backends.cudnn.allow_tf32 = False; torch.backends.cuda.matmul.allow_tf32 = False
    ref, t_ref = timeit(replicated, 256 if dev.type == "cuda" else 64, None)
    refmax = ref.abs().flatten(1).max(1).values
    with torch.no_grad():
        fx = model(X).float(); fb = model(B).float()
    delta = torch.stack([fx[i, c] - fb[i, c] for i in range(N) for c in TG[i]])
    def report(name, out, t):
        d = float(((out - ref).abs().flatten(1).max(1).values / refmax).max())
        comp = ((out.flatten(1).sum(1) - delta).abs() / delta.abs().clamp_min(1e-6))
        r = dict(T=T, name=name, s_per_img=round(t, 5), max_rel_diff=round(d, 4), comp_median=round(float(comp.median()), 4), comp_p90=round(float(comp.quantile(0.9)), 4))
        print(json.dumps(r), flush=True); res.append(r)
    report("ref fp32 replicated", ref, t_ref)
    torch.backends.cudnn.allow_tf32 = True
    for name, fn, bs, dt, sc in [
        ("shared-vmap bf16 bs64", shared_vmap, 64, torch.bfloat16, 1), ("shared-vmap bf16 bs256", shared_vmap, 256, torch.bfloat16, 1),
        ("shared-vmap bf16 bs1024", shared_vmap, 1024, torch.bfloat16, 1),
        ("replicated tf32 bs256", replicated, 256, None, 1), ("replicated tf32 bs1024", replicated, 1024, None, 1),
        ("replicated bf16 bs256", replicated, 256, torch.bfloat16, 1), ("replicated bf16 bs1024", replicated, 1024, torch.bfloat16, 1),
        ("replicated fp16 bs256", replicated, 256, torch.float16, 1), ("replicated fp16 bs1024", replicated, 1024, torch.float16, 1),
        ("replicated fp16x1024 bs1024", replicated, 1024, torch.float16, 1024.0),
        ("shared-vmap fp32 bs64", shared_vmap, 64, None, 1), ("shared-loop fp32 bs64", shared_loop, 64, None, 1),
        ("shared-loop tf32 bs256", shared_loop, 256, None, 1), ("shared-loop fp16 bs256", shared_loop, 256, torch.float16, 1),
        ("shared-loop fp16 bs1024", shared_loop, 1024, torch.float16, 1), ("shared-loop bf16 bs1024", shared_loop, 1024, torch.bfloat16, 1),
        ("shared-loop fp16x1024 bs1024", shared_loop, 1024, torch.float16, 1024.0),
    ]:
        if dev.type == "cpu" and dt is not None:
            continue  # autocast is a GPU matter; the CPU rows are float32 only
        try:
            out, t = timeit(fn, bs, dt, sc)
            report(name, out, t)
        except Exception as e:
            print(json.dumps(dict(T=T, name=name, error=str(e)[:200])), flush=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
