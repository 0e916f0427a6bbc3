"""Benchmark of the divergence library: forward + backward on CPU, median time, peak memory.

    python scripts/bench_divergences.py                 # default sizes (a few minutes)
    python scripts/bench_divergences.py --full          # + N = 4096 and D = 1000 for Sinkhorn
    python scripts/bench_divergences.py --only tokens   # one section: classification, sinkhorn, tokens
    python scripts/bench_divergences.py --only sinkhorn --match "tol 1e-5"  # Sinkhorn methods by label

Sections (printed as Markdown tables):
- classification: every divergence at B in {16, 32, 256}, C in {2, 3};
- sinkhorn: N student and N teacher points (probability vectors in D dimensions), L1 cost,
  eps = 0.1, kdlab's backends (dense, online_torch, KeOps) against POT and GeomLoss;
- step: one ``experiment=smoke_causal`` student step at V = 32000, kdlab's family and
  objective against the same step written plainly (peak memory);
- tokens: the token-level divergences against the floor ``F.kl_div(log_target=True)`` on
  the kept tokens' float32 log-softmaxes, with a padding mask, time and peak-memory
  ratios: ``--device cuda`` at [8, 512, 32000] bf16 (CUDA events, the allocator's peak),
  the CPU at [2, 256, 32000] float32.

    python scripts/bench_divergences.py --device cuda   # the tokens section on a GPU

Peak memory is the growth of the process's peak resident set (VmHWM, reset before each
measured call), so it includes everything a call allocates (KeOps and NumPy too), at
page granularity.
"""

from __future__ import annotations

import argparse
import ctypes
import re
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from kdlab.divergences import get
from kdlab.errors import ResourceError

Fn = Callable[[], None]


def _status(field: str) -> int:
    with open("/proc/self/status") as fh:
        return int(re.search(field + r":\s+(\d+)", fh.read()).group(1)) * 1024


def peak_memory(fn: Fn) -> Optional[float]:
    """MB by which one call of ``fn`` raises the peak RSS (None where it cannot be read)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand cached blocks back: they would hide growth
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
        before = _status("VmRSS")
        fn()
        return (_status("VmHWM") - before) / 2**20
    except OSError:
        return None


def median_time(fn: Fn, min_repeats: int = 3, max_repeats: int = 20, budget: float = 2.0) -> float:
    """Median seconds of ``fn`` after one warm-up call (which also compiles KeOps kernels)."""
    fn()
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() - start < budget):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(fn: Fn, **kw) -> Tuple[float, Optional[float]]:
    t = median_time(fn, **kw)
    return t, peak_memory(fn)


def fwd_bwd(loss: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> Fn:
    def run() -> None:
        zs = z.detach().requires_grad_(True)
        loss(zs).backward()

    return run


def fmt_ms(t: Optional[float]) -> str:
    if t is None:
        return "-"
    return f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"


def fmt_mb(m: Optional[float]) -> str:
    return "-" if m is None else f"{m:.0f} MB"


def table(header: List[str], rows: List[List[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(flush=True)


CLASSIFICATION: Dict[str, dict] = {
    "kd": {}, "kl": {}, "rkl": {}, "skl": {}, "js": {}, "tvd": {}, "hellinger": {},
    "pearson": {}, "neyman": {}, "alpha": {}, "skew_kl": {}, "skew_rkl": {}, "fdiv": {}, "mse": {},
    "sinkhorn (faithful)": {"mode": "faithful"},
    "sinkhorn (sound)": {"mode": "sound"},
}


def name_of(label: str) -> str:
    return label.split(" ")[0]


def bench_classification() -> None:
    sizes = [(B, C) for B in (16, 32, 256) for C in (2, 3)]
    print("## Classification: forward + backward, median time\n")
    rows = []
    for label, params in CLASSIFICATION.items():
        div = get(name_of(label), **params)
        row = [label]
        for B, C in sizes:
            g = torch.Generator().manual_seed(0)
            z_s, z_t = torch.randn(B, C, generator=g) * 2, torch.randn(B, C, generator=g) * 2
            row.append(fmt_ms(median_time(fwd_bwd(lambda s, div=div, z_t=z_t: div(s, z_t), z_s), budget=0.3)))
        rows.append(row)
    table(["divergence"] + [f"B={B}, C={C}" for B, C in sizes], rows)


def sinkhorn_methods(N: int, D: int, full: bool) -> Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    import ot
    from geomloss import SamplesLoss

    a = torch.full((N,), 1.0 / N)
    l1 = lambda u, v: torch.cdist(u, v, p=1)  # noqa: E731

    def pot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ot.sinkhorn2(a, a, torch.cdist(x, y, p=1), 0.1, numItermax=20, stopThr=0.0)

    def geomloss(backend: str) -> Callable:
        cost = "Sum(Abs(X-Y))" if backend == "online" else l1
        loss = SamplesLoss("sinkhorn", p=1, blur=0.1, cost=cost, backend=backend)
        return lambda x, y: loss(x, y)

    def kdlab(**params) -> Callable:
        div = get("sinkhorn", temperature=1.0, **params)
        return lambda x, y: div.transport(x, y)

    methods = {
        "kdlab dense, debiased, tol 1e-5": kdlab(backend="dense"),
        "kdlab dense, 20 it, not debiased": kdlab(backend="dense", debias=False, tol=0.0, max_iter=20),
        "kdlab dense, 20 it, unrolled": kdlab(backend="dense", debias=False, tol=0.0, max_iter=20, gradient="unrolled"),
        "kdlab online_torch (row blocks), debiased, tol 1e-5": kdlab(backend="online_torch"),
        "POT sinkhorn2, 20 it": pot,
        "GeomLoss tensorized, debiased": geomloss("tensorized"),
        "kdlab online (KeOps), debiased": kdlab(backend="online", scaling=0.5),
        "GeomLoss online (KeOps), debiased": geomloss("online"),
        "kdlab faithful (published)": lambda x, y: get("sinkhorn", mode="faithful", temperature=1.0).transport(x, y),
    }
    if N >= 4096 and not full:
        return {}
    return methods


def bench_sinkhorn(full: bool, match: Optional[str] = None) -> None:
    Ns = (32, 256, 1024, 4096) if full else (32, 256, 1024)
    Ds = (3, 100, 1000) if full else (3, 100)
    print("## Batch-wise Sinkhorn: N points vs N points in D dims, L1 cost, eps = 0.1\n")
    print("forward + backward, median time / peak memory growth\n")
    rows = []
    header: List[str] = []
    for N in Ns:
        for D in Ds:
            methods = {k: v for k, v in sinkhorn_methods(N, D, full).items() if match is None or match in k}
            header = ["N x D"] + list(methods)
            g = torch.Generator().manual_seed(0)
            x0 = torch.softmax(torch.randn(N, D, generator=g) * 2, -1)
            y = torch.softmax(torch.randn(N, D, generator=g) * 2, -1)
            row = [f"{N} x {D}"]
            for label, method in methods.items():
                slow = "KeOps" in label and N * D > 1024 * 100 and not full
                if slow:
                    row.append("skipped (--full)")
                    continue
                try:
                    t, m = measure(fwd_bwd(lambda x, method=method, y=y: method(x, y), x0), min_repeats=1, max_repeats=5)
                    row.append(f"{fmt_ms(t)} / {fmt_mb(m)}")
                except (RuntimeError, MemoryError, ResourceError) as err:  # ResourceError: KeOps failed its probe
                    row.append(f"failed: {type(err).__name__}")
            rows.append(row)
            print(f"  done {N} x {D}", file=sys.stderr, flush=True)
    table(header, rows)


# every divergence of the token path, with the targets against the floor
TOKEN_FAMILY = ["kl", "rkl", "tvd", "skew_kl", "skew_rkl", "js", "hellinger", "akl", "skl", "pearson",
                "neyman", "alpha", "kd", "fdiv", "mse"]
TOKEN_TARGET = {"akl": 2.0}  # time / floor; 1.2 for the others (peak memory: at most the floor's)


def token_inputs(shape: Tuple[int, int, int], device: torch.device, dtype: torch.dtype):
    """Student and teacher logits ``[B, T, V]`` (scale 3) and a padding mask ``[B, T]``
    keeping a random 60-100 % prefix of each row, as answer windows do."""
    B, T, V = shape
    g = torch.Generator().manual_seed(0)
    z_s = (torch.randn(B, T, V, generator=g) * 3).to(device, dtype)
    z_t = (torch.randn(B, T, V, generator=g) * 3).to(device, dtype)
    lengths = (T * (0.6 + 0.4 * torch.rand(B, generator=g))).long()
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(device)
    return z_s, z_t, mask


def time_and_peak(fn: Fn, device: torch.device) -> Tuple[float, Optional[float]]:
    """Median seconds and peak memory growth in MB of ``fn``: CUDA events and the caching
    allocator's peak on a GPU, the process's resident set on the CPU."""
    if device.type != "cuda":
        return measure(fn, max_repeats=5)
    fn()
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return statistics.median(times), (torch.cuda.max_memory_allocated() - base) / 2**20


def bench_tokens(shape: Tuple[int, int, int], device: torch.device, dtype: torch.dtype) -> None:
    B, T, V = shape
    z_s, z_t, mask = token_inputs(shape, device, dtype)
    print(f"## Token level: [{B}, {T}, {V}] {str(dtype).replace('torch.', '')} logits on {device.type}, "
          f"{int(mask.sum())} of {B * T} positions kept, forward + backward\n")

    def floor(s: torch.Tensor) -> torch.Tensor:
        """What a user writes: select the kept tokens, KL of the float32 log-softmaxes."""
        return F.kl_div(F.log_softmax(s[mask].float(), -1), F.log_softmax(z_t[mask].float(), -1),
                        reduction="batchmean", log_target=True)

    t0, m0 = time_and_peak(fwd_bwd(floor, z_s), device)
    gpu = device.type == "cuda"  # the targets are GPU figures
    rows = [["F.kl_div(log_target=True) (floor)", fmt_ms(t0), fmt_mb(m0), "1.00", "1.00"] + (["-"] if gpu else [])]
    for name in TOKEN_FAMILY:
        div = get(name)
        t, m = time_and_peak(fwd_bwd(lambda s, div=div: div(s, z_t, mask), z_s), device)
        mem = "-" if m is None or not m0 else f"{m / m0:.2f}"
        target = TOKEN_TARGET.get(name, 1.2)
        ok = "yes" if t / t0 <= target and (m is None or m0 is None or m <= m0) else "no"
        rows.append([name, fmt_ms(t), fmt_mb(m), f"{t / t0:.2f}", mem] + ([f"{ok} (<= {target}x)"] if gpu else []))
        print(f"  done {name}", file=sys.stderr, flush=True)
    header = ["divergence", "median time", "peak memory", "time / floor", "memory / floor"]
    table(header + (["within target"] if gpu else []), rows)


def bench_causal_step(vocab: int = 32000) -> None:
    """Peak memory of one student step of ``smoke_causal`` (token cross-entropy, KD and
    forward KL on the answer tokens; its objective: 0.1 CE + 0.9 KD(T = 1) + KL) through
    kdlab's family and objective (models, objective and batch built as
    ``scripts/bench_token_memory.py`` builds them: the composed preset at V), against the same step written plainly (answer tokens
    selected, float32 log-softmaxes, ``F.cross_entropy`` and ``F.kl_div``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_token_memory import (
        setup,  # the preset's models, objective and batch, as a run builds them
    )

    _, family, teacher, student, objective, batch = setup(vocab)  # the MiniLM tokenizer from the config's cache_dir
    mask = batch["target_mask"]

    def kdlab_step() -> None:
        with torch.no_grad():
            z_t = family.forward(teacher, batch)
        out = family.forward(student, batch)
        objective(out, family.supervised_loss(out, batch), z_t)[0].backward()
        student.zero_grad(set_to_none=True)

    def plain_step() -> None:
        with torch.no_grad():
            z_t = family.forward(teacher, batch).logits[mask].float()
        z_s = family.forward(student, batch).logits[mask].float()
        log_q, log_p = F.log_softmax(z_s, -1), F.log_softmax(z_t, -1)
        ce = F.cross_entropy(z_s, batch["target_ids"][mask])
        kd = -(log_p.exp() * log_q).sum(-1).mean()
        kl = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")
        (0.1 * ce + 0.9 * kd + kl).backward()
        student.zero_grad(set_to_none=True)

    print(f"## One smoke_causal student step at V = {vocab}: {int(mask.sum())} answer tokens of "
          f"{mask.numel()} window positions, forward + backward\n")
    rows = []
    for label, step in (("plain KL step (tokens selected)", plain_step), ("kdlab (family + objective)", kdlab_step)):
        t, m = measure(step, max_repeats=5)
        rows.append([label, fmt_ms(t), fmt_mb(m)])
    table(["step", "median time", "peak memory growth"], rows)


TOKEN_SHAPES = {"cuda": (8, 512, 32000), "cpu": (2, 256, 32000)}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="Sinkhorn also at N = 4096 and D = 1000, KeOps everywhere")
    parser.add_argument("--only", choices=["classification", "sinkhorn", "tokens", "step"], help="run one section")
    parser.add_argument("--match", default=None, help="Sinkhorn: only the methods whose label contains this")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="tokens section only: cuda times [8, 512, 32000] bf16 logits (cpu: [2, 256, 32000] float32)")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda needs a CUDA device")
        if args.only not in (None, "tokens"):
            parser.error("--device cuda runs the tokens section only")
        args.only = "tokens"
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'full' if args.full else 'default'} sizes\n")
    if args.only in (None, "classification"):
        bench_classification()
    if args.only in (None, "sinkhorn"):
        bench_sinkhorn(args.full, args.match)
    if args.only in (None, "tokens"):
        device = torch.device(args.device)
        bench_tokens(TOKEN_SHAPES[device.type], device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    if args.only in (None, "step"):
        bench_causal_step()


if __name__ == "__main__":
    main()
