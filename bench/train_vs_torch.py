#!/usr/bin/env python3
"""GPT training with flashgrad against the same model in PyTorch, on one GPU.

    bench/train_vs_torch.py throughput [--bench PATH] [--presets char,gpt2] [--out FILE.md]
    bench/train_vs_torch.py shakespeare --data FILE [--steps N] [--csv FILE] [--compile]

throughput: training tokens/s of nanoGPT's model (token + position
embeddings, pre-norm blocks, GELU in its tanh form as flashgrad's MLP, tied
head, no biases, GPT-2 init) in PyTorch eager and torch.compile, and of examples/bench_train (flashgrad) when --bench
is given, all in this run on this GPU. One step = zero_grad, forward under
bf16 autocast with the loss, backward, clip_grad_norm_(1.0), fused AdamW;
SDPA picks its flash kernel. Random token ids (a new batch each step), CUDA
events around each step, median of --steps after --warmup untimed steps
(compilation happens in the warm-up). Presets (as bench_train):
  char  vocab 65, 6 layers, 6 heads, 384 wide, block 256, batch 64, dropout 0.2
  gpt2  vocab 50304, 12 layers, 12 heads, 768 wide, block 1024, batch 16, dropout 0

shakespeare: nanoGPT's train.py on shakespeare-char in PyTorch: the
character vocabulary of the file, first 90% train / last 10% val, random
windows, 6 layers, 6 heads, 384 wide, block 256, batch 64, dropout 0.2, AdamW
(beta2 0.99, weight decay 0.1 on matrices), lr 1e-3 with 100 warm-up steps and
cosine to 1e-4 at 5000, clip 1.0, bf16 autocast, evaluation of 200 batches
per split every 250 steps. Prints train_gpt's progress line format, the best
val loss and the wall time (training + evaluation, from the first step).
"""
import argparse
import datetime
import math
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    "char": dict(vocab=65, layers=6, heads=6, width=384, block=256, batch=64, dropout=0.2),
    "gpt2": dict(vocab=50304, layers=12, heads=12, width=768, block=1024, batch=16, dropout=0.0),
}


class Block(nn.Module):
    def __init__(self, C, H, p):
        super().__init__()
        self.H, self.p = H, p
        self.ln_1 = nn.LayerNorm(C, bias=False)
        self.c_attn = nn.Linear(C, 3 * C, bias=False)
        self.c_proj = nn.Linear(C, C, bias=False)
        self.ln_2 = nn.LayerNorm(C, bias=False)
        self.c_fc = nn.Linear(C, 4 * C, bias=False)
        self.mlp_proj = nn.Linear(4 * C, C, bias=False)
        self.drop = nn.Dropout(p)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.drop(self.c_proj(y))
        return x + self.drop(self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")))


class GPT(nn.Module):
    def __init__(self, vocab, layers, heads, width, block, dropout, **_):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(block, width)
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList(Block(width, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width, bias=False)
        for n, p in self.named_parameters():  # GPT-2 init, as nanoGPT
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * layers) if n.endswith("c_proj.weight") or n.endswith("mlp_proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(T, device=idx.device)))
        for b in self.h:
            x = b(x)
        logits = self.ln_f(x) @ self.wte.weight.t()  # tied head
        return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))


def make_optimizer(model, lr, beta2, wd=0.1):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": other, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, beta2), eps=1e-8, fused=True)


def train_step(model, fwd, opt, x, y):
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = fwd(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


def setup(name, n_batches):
    """A preset's model (seeded), its AdamW and n_batches random (B, T + 1) token batches on the GPU."""
    cfg = PRESETS[name]
    torch.manual_seed(1337)
    model = GPT(**cfg).cuda().train()
    opt = make_optimizer(model, 6e-4, 0.95)
    data = torch.randint(0, cfg["vocab"], (n_batches, cfg["batch"], cfg["block"] + 1), device="cuda")
    return model, opt, data, cfg["batch"], cfg["block"]


def torch_throughput(name, compiled, steps, warm):
    model, opt, data, B, T = setup(name, min(64, steps + warm))
    fwd = torch.compile(model) if compiled else model
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
    ms = []
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    for it in range(warm + steps):
        row = data[it % data.shape[0]]
        ev[0].record()
        loss = train_step(model, fwd, opt, row[:, :T], row[:, 1:])
        ev[1].record()
        torch.cuda.synchronize()
        if it == warm - 1:
            t_warm = time.time() - t0
        if it >= warm:
            ms.append(ev[0].elapsed_time(ev[1]))
    ms.sort()
    med = ms[len(ms) // 2]
    peak = torch.cuda.max_memory_allocated() / 2**20
    del model, fwd, opt, data
    torch.cuda.empty_cache()
    return dict(med=med, p10=ms[len(ms) // 10], p90=ms[len(ms) * 9 // 10], tok=B * T / med * 1e3, peak=peak,
                loss=float(loss), warm_s=t_warm)


def torch_profile(name, steps=3):
    """Kernel time table of a few eager steps (torch.profiler), for comparing with ncu on bench_train."""
    from torch.profiler import profile, ProfilerActivity
    model, opt, data, B, T = setup(name, steps + 3)
    for it in range(3):
        train_step(model, model, opt, data[it, :, :T], data[it, :, 1:])
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for it in range(steps):
            train_step(model, model, opt, data[3 + it, :, :T], data[3 + it, :, 1:])
        torch.cuda.synchronize()
    print(f"torch eager {name}: CUDA kernel time over {steps} steps")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=90))


def run_flashgrad(bench, name, steps, warm):
    cmd = [bench, "--preset", name, "--steps", str(steps), "--warmup-steps", str(warm)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(p.stdout + p.stderr)
    if p.returncode != 0:
        return None
    for line in p.stdout.splitlines():
        if line.startswith("CSV,flashgrad,"):
            f = line.split(",")
            return dict(med=float(f[5]), p10=float(f[6]), p90=float(f[7]), tok=float(f[8]), peak=float(f[9]))
    return None


def cmd_throughput(a):
    gpu = torch.cuda.get_device_name()
    if a.profile:
        for name in a.presets.split(","):
            torch_profile(name)
        return
    rows = []
    for name in a.presets.split(","):
        cfg = PRESETS[name]
        res = {}
        if a.bench:
            res["flashgrad"] = run_flashgrad(a.bench, name, a.steps, a.warmup)
        res["torch eager"] = torch_throughput(name, False, a.steps, a.warmup)
        if not a.no_compile:
            res["torch.compile"] = torch_throughput(name, True, a.steps, a.warmup)
        for k, r in res.items():
            print(f"{name:5s} {k:14s} " + ("failed" if r is None else
                  f"median {r['med']:.2f} ms (p10 {r['p10']:.2f}, p90 {r['p90']:.2f})  {r['tok']:,.0f} tok/s  "
                  f"peak {r['peak']:.0f} MiB"), flush=True)
        rows.append((name, cfg, res))
    out = [f"# GPT training throughput: flashgrad vs PyTorch ({gpu}, {datetime.date.today()})", "",
           f"torch {torch.__version__}; bench/train_vs_torch.py throughput; one step = zero_grad, forward + loss "
           f"(bf16 autocast), backward, clip 1.0, fused AdamW; median of {a.steps} steps (CUDA events) after "
           f"{a.warmup} warm-up steps; random tokens.", "",
           "| config | B x T | framework | ms/step (median) | p10-p90 | tokens/s | flashgrad / this | peak MiB |",
           "|---|---|---|---|---|---|---|---|"]
    for name, cfg, res in rows:
        fg = res.get("flashgrad")
        for k, r in res.items():
            if r is None:
                out.append(f"| {name} | {cfg['batch']} x {cfg['block']} | {k} | failed | | | | |")
                continue
            ratio = f"{fg['tok'] / r['tok']:.2f}" if fg and k != "flashgrad" else ""
            out.append(f"| {name} | {cfg['batch']} x {cfg['block']} | {k} | {r['med']:.2f} | "
                       f"{r['p10']:.2f}-{r['p90']:.2f} | {r['tok']:,.0f} | {ratio} | {r['peak']:.0f} |")
    text = "\n".join(out) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


def cmd_shakespeare(a):
    text = open(a.data, "rb").read()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n = int(0.9 * len(ids))
    split = {"train": ids[:n], "val": ids[n:]}
    B, T = 64, 256
    torch.manual_seed(1337)
    cfg = dict(vocab=len(chars), layers=6, heads=6, width=384, block=T, dropout=0.2)
    model = GPT(**cfg).cuda()
    fwd = torch.compile(model) if a.compile else model
    opt = make_optimizer(model, 1e-3, 0.99)

    def batch(s):
        d = split[s]
        ix = torch.randint(len(d) - T, (B,))
        x = torch.stack([d[i:i + T] for i in ix])
        y = torch.stack([d[i + 1:i + 1 + T] for i in ix])
        return x.pin_memory().cuda(non_blocking=True), y.pin_memory().cuda(non_blocking=True)

    @torch.no_grad()
    def estimate():
        model.eval()
        out = []
        for s in ("train", "val"):
            tot = 0.0
            for _ in range(a.eval_iters):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    tot += float(fwd(*batch(s)))
            out.append(tot / a.eval_iters)
        model.train()
        return out

    def lr_at(it):  # nanoGPT's get_lr
        if it < 100:
            return 1e-3 * (it + 1) / 101
        if it > a.steps:
            return 1e-4
        r = (it - 100) / (a.steps - 100)
        return 1e-4 + 0.5 * (1 + math.cos(math.pi * r)) * (1e-3 - 1e-4)

    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}: shakespeare-char, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, vocab {len(chars)}, "
          f"{'torch.compile' if a.compile else 'eager'}", flush=True)
    csv = open(a.csv, "w") if a.csv else None
    if csv:
        csv.write("step,train_loss,val_loss,lr,ms_per_step,tok_per_s,elapsed_s\n")
    best = float("inf")
    t_start = time.time()
    t_mark, step_mark, t_train = t_start, 0, 0.0
    model.train()
    for it in range(a.steps + 1):
        if it % a.eval_interval == 0 or it == a.steps:
            torch.cuda.synchronize()
            now = time.time()
            ms = 1e3 * (now - t_mark) / (it - step_mark) if it > step_mark else float("nan")
            t_train += now - t_mark
            tl, vl = estimate()
            best = min(best, vl)
            el = time.time() - t_start
            print(f"step {it:4d}/{a.steps} | train {tl:.4f} | val {vl:.4f} | lr {lr_at(it):.2e} | "
                  f"{ms:.1f} ms/step | {B * T / ms * 1e3 if ms == ms else 0:,.0f} tok/s | {el:.0f} s", flush=True)
            if csv:
                csv.write(f"{it},{tl:.6f},{vl:.6f},{lr_at(it):.6e},{ms:.3f},{B * T / ms * 1e3 if ms == ms else 0:.1f},"
                          f"{el:.2f}\n")
                csv.flush()
            t_mark, step_mark = time.time(), it
        if it == a.steps:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(it)
        train_step(model, fwd, opt, *batch("train"))
    wall = time.time() - t_start
    print(f"best val loss {best:.4f}; wall time {wall:.1f} s ({t_train:.1f} s training, "
          f"{wall - t_train:.1f} s evaluation)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--bench", help="path of examples/bench_train (omit: PyTorch only)")
    t.add_argument("--presets", default="char,gpt2")
    t.add_argument("--steps", type=int, default=30)
    t.add_argument("--warmup", type=int, default=10)
    t.add_argument("--no-compile", action="store_true")
    t.add_argument("--profile", action="store_true", help="only print torch.profiler's kernel table of eager steps")
    t.add_argument("--out")
    s = sub.add_parser("shakespeare")
    s.add_argument("--data", required=True)
    s.add_argument("--steps", type=int, default=5000)
    s.add_argument("--eval-interval", type=int, default=250)
    s.add_argument("--eval-iters", type=int, default=200)
    s.add_argument("--compile", action="store_true")
    s.add_argument("--csv")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("train_vs_torch.py: no CUDA device")
    for p in (a.presets.split(",") if a.cmd == "throughput" else []):
        if p not in PRESETS:
            sys.exit(f"train_vs_torch.py: unknown preset {p!r} (char, gpt2)")
    cmd_throughput(a) if a.cmd == "throughput" else cmd_shakespeare(a)


if __name__ == "__main__":
    main()
