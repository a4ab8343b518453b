#!/usr/bin/env python3
"""flashgrad flash attention against PyTorch SDPA, in one run on one GPU.

    bench/attention_vs_torch.py [--bench PATH] [--quick] [--out FILE.md]

Runs examples/bench_attention (flashgrad; its "CSV," lines), then times
torch.nn.functional.scaled_dot_product_attention on the same cases with the
flash, cuDNN and math backends (torch.nn.attention.sdpa_kernel): forward and
backward separately, CUDA events, median of the same number of runs after
warm-up, random inputs, FLOPs fwd = 4 B H L^2 D (halved when causal) and
bwd = 2.5 fwd. Prints a markdown table with TFLOP/s and the ratios
flashgrad / torch-flash and flashgrad / cuDNN, and the extra peak memory of one
fwd+bwd. A backend that cannot run a case (e.g. flash with fp32) shows "-".
"""
import argparse
import datetime
import os
import statistics
import subprocess
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

DT = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}


def flops(B, H, L, D, causal):
    return 4.0 * B * H * L * L * D * (0.5 if causal else 1.0)


def time_torch(case, backend, reps, warm=3):
    name, dt, B, Hq, Hkv, L, D, causal, p = case
    dev = "cuda"
    q = torch.randn(B, Hq, L, D, device=dev, dtype=DT[dt])
    k = torch.randn(B, Hkv, L, D, device=dev, dtype=DT[dt])
    v = torch.randn(B, Hkv, L, D, device=dev, dtype=DT[dt])
    go = torch.randn(B, Hq, L, D, device=dev, dtype=DT[dt])
    gqa = Hq != Hkv
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
    tf, tb = [], []
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    try:
        with sdpa_kernel([backend]):
            for it in range(warm + reps):
                qi, ki, vi = (t.detach().requires_grad_() for t in (q, k, v))
                ev[0].record()
                y = F.scaled_dot_product_attention(qi, ki, vi, is_causal=bool(causal), dropout_p=p,
                                                   enable_gqa=gqa)
                ev[1].record()
                y.backward(go)
                ev[2].record()
                torch.cuda.synchronize()
                if it >= warm:
                    tf.append(ev[0].elapsed_time(ev[1]))
                    tb.append(ev[1].elapsed_time(ev[2]))
                del qi, ki, vi, y
    except RuntimeError as e:  # backend unavailable for this case
        msg = str(e).splitlines()[0][:80]
        return None, msg
    extra = (torch.cuda.max_memory_allocated() - base) / 2**20
    del q, k, v, go
    torch.cuda.empty_cache()
    return (statistics.median(tf), statistics.median(tb), extra), None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--bench", default=os.path.join(here, "..", "_build", "examples", "bench_attention"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--math-max", type=int, default=1024, help="longest L for flashgrad's math backend")
    ap.add_argument("--out", default=None, help="also write the markdown report here")
    ap.add_argument("--case", help="only this case: B,H,L,D,CAUSAL,P (bench_attention --case)")
    ap.add_argument("--dtype", choices=["bf16", "f16", "f32"], help="the --case's dtype (default bf16)")
    ap.add_argument("--deterministic", action="store_true", help="flashgrad's backward without atomics")
    a = ap.parse_args()
    if a.quick:
        a.reps = 20
    cmd = [a.bench, "--reps", str(a.reps), "--math-max", str(a.math_max)] + (["--quick"] if a.quick else []) \
        + (["--case", a.case] if a.case else []) + (["--dtype", a.dtype] if a.dtype else []) \
        + (["--deterministic"] if a.deterministic else [])
    print("running", " ".join(cmd), flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    if res.returncode != 0:
        sys.exit("bench_attention failed with exit status %d" % res.returncode)
    ours = []
    for line in res.stdout.splitlines():
        if line.startswith("CSV,"):
            f = line.split(",")[1:]
            case = (f[0], f[1], int(f[2]), int(f[3]), int(f[4]), int(f[5]), int(f[6]), int(f[7]), float(f[8]))
            ours.append((case, float(f[9]), float(f[10]), float(f[11])))
    gpu = torch.cuda.get_device_name()
    backends = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                ("mem-eff", SDPBackend.EFFICIENT_ATTENTION)]
    rows = []
    for case, ffwd, fbwd, fmem in ours:
        name, dt, B, Hq, Hkv, L, D, causal, p = case
        Fw = flops(B, Hq, L, D, causal)
        row = {"case": case, "ours": (ffwd, fbwd, fmem), "F": Fw}
        for bname, be in backends:
            # mem-efficient only where flash cannot run (fp32); math is not timed at these sizes
            if bname == "mem-eff" and dt != "f32":
                continue
            r, err = time_torch(case, be, a.reps)
            row[bname] = r
        rows.append(row)
        print("torch done:", name, L, flush=True)

    def tf(ms, mult, Fw):
        return Fw * mult / ms * 1e-9

    date = datetime.date.today().isoformat()
    out = ["# flash attention: flashgrad vs PyTorch SDPA (%s, %s, torch %s)" % (gpu, date, torch.__version__), "",
           "Same run, same GPU. TFLOP/s fwd / bwd (fwd = 4BHL^2D, halved causal; bwd = 2.5x). Ratio = torch "
           "time / flashgrad time (> 1: flashgrad faster). Extra MiB: peak device memory of one fwd+bwd over the "
           "inputs.", "",
           "| case | L | B | Hq/Hkv | causal | flashgrad fwd/bwd | torch-flash fwd/bwd | ratio vs flash fwd/bwd | "
           "cuDNN fwd/bwd | ratio vs cuDNN fwd/bwd | mem-eff fwd/bwd | ratio vs mem-eff | extra MiB ours/torch-flash |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def pair(r, Fw):
        return "-" if r is None else "%.0f / %.0f" % (tf(r[0], 1, Fw), tf(r[1], 2.5, Fw))

    def ratio(r, o):
        return "-" if r is None else "%.2f / %.2f" % (r[0] / o[0], r[1] / o[1])

    for row in rows:
        name, dt, B, Hq, Hkv, L, D, causal, p = row["case"]
        o, Fw = row["ours"], row["F"]
        fl, cu, me = row.get("flash"), row.get("cudnn"), row.get("mem-eff")
        out.append("| %s%s | %d | %d | %d/%d | %s | %s | %s | %s | %s | %s | %s | %s | %.0f / %s |" % (
            name, " p=%g" % p if p else "", L, B, Hq, Hkv, "yes" if causal else "no", pair(o, Fw), pair(fl, Fw),
            ratio(fl, o), pair(cu, Fw), ratio(cu, o), pair(me, Fw), ratio(me, o), o[2],
            "-" if fl is None else "%.0f" % fl[2]))
    report = "\n".join(out) + "\n"
    print(report)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(report)


if __name__ == "__main__":
    main()
