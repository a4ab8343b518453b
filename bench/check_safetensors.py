#!/usr/bin/env python3
"""Checks flashgrad checkpoints against Hugging Face's safetensors, both ways.

  python3 bench/check_safetensors.py --tool _build/examples/ckpt_interop [--dir DIR]

1. `ckpt_interop write` makes a file with flashgrad; this script checks its raw
   layout (header length, 8-byte alignment, offsets tiling the data buffer, each
   tensor aligned to its element size) and loads it with
   safetensors.torch.load_file, comparing every tensor bit for bit with the
   values computed here, and the metadata (safe_open(...).metadata()).
2. safetensors.torch.save_file writes the same tensors and metadata;
   `ckpt_interop check` loads that file with flashgrad and compares bit for bit.

Without torch it falls back to safetensors.numpy (no bfloat16: that tensor is
skipped on both sides). The tensors and values mirror examples/ckpt_interop.c.
Exit status 0 when every check passes; the last line reads "N passed, M failed".
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import torch
    from safetensors.torch import load_file, save_file
    BACKEND = "torch"
except ImportError:  # numpy only: everything but bf16
    torch = None
    import numpy as np
    from safetensors.numpy import load_file, save_file
    BACKEND = "numpy"
from safetensors import safe_open

SPECS = [  # name, safetensors dtype, shape
    ("f32.mat", "F32", (3, 5)),
    ("f64.vec", "F64", (7,)),
    ("bf16.w", "BF16", (4, 6)),
    ("f16.w", "F16", (2, 3, 4)),
    ("i32.ids", "I32", (9,)),
    ("i64.big", "I64", (5,)),
    ("scalar", "F32", ()),
    ("empty", "F32", (0, 4)),
    ("layers.0.attn.wq.weight", "F32", (6, 4)),
]
META = {
    "step": "123456789012345678",
    "rng.seed": "42",
    "rng.offset": "18446744073709551615",
    "note": "h\u00e9llo \u2713",
}
SIZES = {"F32": 4, "F64": 8, "BF16": 2, "F16": 2, "I32": 4, "I64": 8, "U8": 1, "I8": 1, "BOOL": 1,
         "I16": 2, "U16": 2, "U32": 4, "U64": 8}

passed = failed = 0


def report(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    print(("ok   " if ok else "FAIL ") + what, flush=True)


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def values(dtype, n):
    """Element values (exact in every dtype), as examples/ckpt_interop.c makes them."""
    if dtype in ("F32", "F64", "BF16", "F16"):
        return [0.1 if (i == 0 and dtype in ("F32", "F64")) else ((i * 37) % 23 - 11) * 0.25 for i in range(n)]
    if dtype == "I32":
        return [-2**31 if i == 0 else 2**31 - 1 if i == n - 1 else (i * 7919) % 100003 - 50000 for i in range(n)]
    return [-2**63 if i == 0 else 2**53 + 1 if i == 1 else (i - 2) * 2**40 + i for i in range(n)]


def expected(dtype, shape):
    v = values(dtype, numel(shape))
    if torch is not None:
        tdt = {"F32": torch.float32, "F64": torch.float64, "BF16": torch.bfloat16, "F16": torch.float16,
               "I32": torch.int32, "I64": torch.int64}[dtype]
        src = torch.tensor(v, dtype=torch.float64 if dtype[0] in "FB" else torch.int64)
        return src.to(tdt).reshape(shape)
    if dtype == "BF16":
        return None
    ndt = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I32": np.int32, "I64": np.int64}[dtype]
    src = np.array(v, dtype=np.float64 if dtype[0] == "F" else np.int64)
    return src.astype(ndt).reshape(shape)


def raw_bytes(t):
    if torch is not None:
        return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return t.tobytes()


def check_layout(path):
    """The file against the safetensors spec, from its bytes."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    report(n % 8 == 0, f"header length {n} is a multiple of 8")
    text = data[8:8 + n]
    report(text[:1] == b"{" and text.rstrip(b" ").endswith(b"}"), "header is '{...}' padded with spaces")
    hdr = json.loads(text.decode("utf-8"))
    report(all(isinstance(v, str) for v in hdr.get("__metadata__", {}).values()), "metadata values are strings")
    entries = sorted((v["data_offsets"], k, v) for k, v in hdr.items() if k != "__metadata__")
    at, ok_tile, ok_align, ok_size = 0, True, True, True
    for (b, e), name, v in entries:
        ok_tile &= b == at
        ok_align &= (8 + n + b) % SIZES[v["dtype"]] == 0
        ok_size &= e - b == numel(v["shape"]) * SIZES[v["dtype"]]
        at = e
    report(ok_tile and at == len(data) - 8 - n, "data_offsets tile the data buffer exactly")
    report(ok_align, "every tensor starts at a multiple of its element size")
    report(ok_size, "every range holds dtype x shape bytes")


def check_c_file(path):
    check_layout(path)
    with safe_open(path, framework="pt" if torch is not None else "np") as f:
        meta = f.metadata() or {}
        names = set(f.keys())
        if torch is None:  # numpy cannot hold bf16: load the others one by one
            tensors = {k: f.get_tensor(k) for k in names if f.get_slice(k).get_dtype() != "BF16"}
    if torch is not None:
        tensors = load_file(path)
    for k, v in META.items():
        report(meta.get(k) == v, f"metadata {k} = {meta.get(k)!r}")
    report(meta.get("format") == "pt", "metadata format = 'pt'")
    for name, dtype, shape in SPECS:
        want = expected(dtype, shape)
        if want is None:
            print(f"skip {name} ({dtype}: not in numpy)")
            continue
        got = tensors.get(name)
        ok = got is not None and tuple(got.shape) == tuple(shape) and got.dtype == want.dtype and \
            raw_bytes(got) == raw_bytes(want)
        report(ok, f"safetensors reads flashgrad's {name} {dtype} {tuple(shape)} bit for bit")
    report(names == {s[0] for s in SPECS}, "no other tensors")


def write_reference(path):
    tensors = {}
    for name, dtype, shape in SPECS:
        t = expected(dtype, shape)
        if t is not None:
            tensors[name] = t
    save_file(tensors, path, metadata=dict(META))
    return len(tensors) == len(SPECS)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tool", required=True, help="path to the built examples/ckpt_interop")
    ap.add_argument("--dir", default=None, help="where to write the two files (default: a temporary directory)")
    args = ap.parse_args()
    import safetensors
    print(f"backend: {BACKEND} (safetensors {safetensors.__version__}"
          + (f", torch {torch.__version__})" if torch is not None else ")"))
    d = args.dir or tempfile.mkdtemp(prefix="fg_st_")
    os.makedirs(d, exist_ok=True)
    c_path, py_path = os.path.join(d, "flashgrad.safetensors"), os.path.join(d, "safetensors.safetensors")

    r = subprocess.run([args.tool, "write", c_path], capture_output=True, text=True)
    report(r.returncode == 0, f"ckpt_interop write: {(r.stdout + r.stderr).strip()}")
    if r.returncode == 0:
        check_c_file(c_path)

    complete = write_reference(py_path)
    r = subprocess.run([args.tool, "check", py_path] + ([] if complete else ["--partial"]), capture_output=True, text=True)
    print(r.stdout + r.stderr, end="")
    report(r.returncode == 0, "flashgrad reads the safetensors-written file bit for bit")

    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
