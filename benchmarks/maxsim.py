"""Benchmark budgeted MaxSim scoring on the CPU.

For N candidates of Kc=64 vectors (D = 128 and 384) and one query of Kq=16 vectors, times every
MetaEmbed budget (1,1), (2,4), (4,8), (8,16), (16,64) for float32, bfloat16 and float16 storage:

* ``metaembed_rag.scoring.maxsim`` (backend="auto": the compiled kernel; torch for fp32 (1,1));
* a naive ``torch.einsum`` baseline (einsum -> max -> sum, in float32, run in chunks of 10k
  candidates so the widened copy stays in memory);
* PyLate's ``colbert_scores`` and ``maxsim-cpu`` if installed (``pip install -e ".[bench]" && pip install --no-deps pylate``);
  for 16-bit storage PyLate is timed on the first 10k candidates (its 16-bit CPU einsum takes
  minutes at 100k) and scaled to N;
* the floor max(bytes read / memory bandwidth, FLOPs / GEMM rate), both measured in this run
  (bandwidth: multi-threaded torch reduction over a 2 GiB array; GEMM: torch.mm fp32 4096^3).
  Bytes = the document prefix actually read (N * r_c * D * itemsize); FLOPs = 2*nq*N*r_q*r_c*D.

Everything runs with the same thread count (default 2). Usage::

    python benchmarks/maxsim.py                 # full run, prints a Markdown table at the end
    python benchmarks/maxsim.py --quick         # N=10k only, fewer repeats
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import multiprocessing
import os
import platform
import subprocess
import sys
import time
import types
from collections.abc import Callable

_THREADS_DEFAULT = 2
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, str(_THREADS_DEFAULT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from metaembed_rag import scoring  # noqa: E402
from metaembed_rag.scoring import kernel_info, maxsim  # noqa: E402

BUDGETS = [(1, 1), (2, 4), (4, 8), (8, 16), (16, 64)]
KQ, KC = 16, 64
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Other names accepted by --dtypes (torch's), mapped to the short names of the table.
DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}


def dtype_name(text: str) -> str:
    """``"float32"`` / ``"fp32"`` -> ``"fp32"`` (the table's name).

    Raises:
        argparse.ArgumentTypeError: not a dtype the benchmark runs.
    """
    name = DTYPE_ALIASES.get(text.lower(), text.lower())
    if name not in DTYPES:
        choices = ", ".join([*DTYPES, *DTYPE_ALIASES])
        raise argparse.ArgumentTypeError(f"unknown dtype {text!r}; choose from {choices}")
    return name


def best_time(fn: Callable[[], object], repeats: int, min_time: float = 0.0) -> float:
    """Best wall time over `repeats` calls after a warm-up call (a single call if it is slow)."""
    t0 = time.perf_counter()
    fn()  # warm-up
    first = time.perf_counter() - t0
    if first > 2.0:
        return first
    best = float("inf")
    total = 0.0
    n = 0
    while n < repeats or total < min_time:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best = min(best, dt)
        total += dt
        n += 1
        if n >= 50:
            break
    return best


def measure_bandwidth() -> float:
    x = torch.ones(512 * 1024 * 1024, dtype=torch.float32)  # 2 GiB
    t = best_time(lambda x=x: x.sum(), repeats=5)
    bw = x.numel() * 4 / t
    x = None
    gc.collect()
    return bw


def measure_gemm() -> float:
    a = torch.randn(4096, 4096)
    b = torch.randn(4096, 4096)
    t = best_time(lambda: torch.mm(a, b), repeats=5)
    return 2 * 4096**3 / t


def make_docs(n: int, dim: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty((n, KC, dim), dtype=dtype)
    step = 4096
    for s in range(0, n, step):
        e = min(n, s + step)
        x = torch.randn((e - s, KC, dim), generator=gen)
        x /= x.norm(dim=-1, keepdim=True)
        out[s:e] = x.to(dtype)
    return out


def naive_einsum(q: torch.Tensor, d: torch.Tensor, r_q: int, r_c: int) -> torch.Tensor:
    outs = []
    for s in range(0, d.shape[0], 10_000):
        dc = d[s : s + 10_000, :r_c].to(torch.float32)
        sim = torch.einsum("qid,njd->qnij", q[:, :r_q], dc)
        outs.append(sim.amax(dim=-1).sum(dim=-1))
    return torch.cat(outs, dim=1)


def time_in_child(fn: Callable[[], float]) -> tuple[float | None, str]:
    """Run a timing in a forked child: a third-party crash (segfault) must not end the run."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)

    def target() -> None:
        child.send(fn())

    proc = ctx.Process(target=target)
    proc.start()
    proc.join()
    if proc.exitcode != 0 or not parent.poll():
        return None, f"crashed (exit code {proc.exitcode})"
    return parent.recv(), ""


def load_pylate() -> tuple[Callable | None, str]:
    try:
        from pylate.scores import colbert_scores  # type: ignore[import-not-found]

        return colbert_scores, "pylate"
    except ImportError as err:
        spec = importlib.util.find_spec("pylate")
        if spec is None or not spec.submodule_search_locations:
            return None, f"not installed ({err})"
        # pylate/__init__ imports training dependencies (datasets, ...); the scores module only
        # needs torch/numpy, so load pylate.scores without running the package __init__.
        root = list(spec.submodule_search_locations)
        for name, path in (("pylate", root), ("pylate.utils", [os.path.join(root[0], "utils")])):
            pkg = types.ModuleType(name)
            pkg.__path__ = path
            sys.modules[name] = pkg
        try:
            sys.modules["pylate.utils"].convert_to_tensor = importlib.import_module(
                "pylate.utils.tensor"
            ).convert_to_tensor
            mod = importlib.import_module("pylate.scores")
            return mod.colbert_scores, f"pylate.scores loaded without pylate/__init__ ({err})"
        except Exception as err2:  # noqa: BLE001
            return None, f"not importable ({err}; {err2})"


def load_maxsim_cpu() -> tuple[Callable | None, str]:
    try:
        import maxsim_cpu  # type: ignore[import-not-found]

        return maxsim_cpu.maxsim_scores, "maxsim-cpu"
    except ImportError as err:
        return None, f"not installed ({err})"


def machine_description() -> str:
    model = platform.processor()
    flags = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("Flags:"):
                keep = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_bf16", "avx512_fp16",
                        "amx_bf16", "avx512_vnni")  # fmt: skip
                have = set(line.split(":", 1)[1].split())
                flags = " ".join(f for f in keep if f in have)
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, flags: {flags}"


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "n/a"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    return f"{x / 1e3:.0f}k"


def main() -> None:
    from metaembed_rag.cli.common import OneLineArgumentParser

    parser = OneLineArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--threads", type=int, default=_THREADS_DEFAULT)
    parser.add_argument("--quick", action="store_true", help="N=10k only, fewer repeats")
    parser.add_argument("--ns", type=int, nargs="*", default=None)
    parser.add_argument("--dims", type=int, nargs="*", default=[128, 384])
    parser.add_argument(
        "--dtypes", nargs="*", type=dtype_name, default=list(DTYPES),
        help="fp32 bf16 fp16 (or float32 bfloat16 float16)",
    )  # fmt: skip
    parser.add_argument("--nq", type=int, default=1, help="queries scored per call")
    parser.add_argument(
        "--budgets", nargs="*", default=None, help="subset of budgets, e.g. 1,1 16,64"
    )
    parser.add_argument("--no-others", action="store_true", help="skip PyLate and maxsim-cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ns = args.ns or ([10_000] if args.quick else [10_000, 100_000])
    repeats = 2 if args.quick else 3
    budgets = BUDGETS
    if args.budgets:
        try:
            budgets = [tuple(int(x) for x in b.split(",")) for b in args.budgets]
        except ValueError:
            parser.error(f"--budgets {' '.join(args.budgets)}: expected pairs like 1,1 16,64")

    info = kernel_info()
    print(f"# machine: {machine_description()}")
    print(
        f"# python {platform.python_version()}, torch {torch.__version__}, threads={args.threads}"
    )
    print(f"# kernel: {info}")
    bw = measure_bandwidth()
    gemm = measure_gemm()
    print(f"# measured memory bandwidth: {bw / 1e9:.1f} GB/s (2 GiB torch.sum, {args.threads} thr)")
    print(f"# measured GEMM rate: {gemm / 1e9:.1f} GFLOP/s (torch.mm fp32 4096^3)")
    pylate_fn, pylate_note = (None, "skipped") if args.no_others else load_pylate()
    mcpu_fn, mcpu_note = (None, "skipped") if args.no_others else load_maxsim_cpu()
    print(f"# pylate: {pylate_note}; maxsim-cpu: {mcpu_note}")

    rows: list[dict[str, object]] = []
    header = (
        "| D | N | dtype | budget | ours cand/s | path | % of floor | floor cand/s | naive cand/s "
        "| vs naive | PyLate cand/s | vs PyLate | maxsim-cpu cand/s | vs maxsim-cpu | load |"
    )
    for dim in args.dims:
        q = torch.randn(args.nq, KQ, dim, generator=torch.Generator().manual_seed(1))
        q /= q.norm(dim=-1, keepdim=True)
        for n in ns:
            for dname in args.dtypes:
                dtype = DTYPES[dname]
                docs = make_docs(n, dim, dtype, seed=2)
                itemsize = docs.element_size()
                for r_q, r_c in budgets:
                    load = os.getloadavg()[0]
                    t_ours = best_time(
                        lambda q=q, docs=docs, b=(r_q, r_c): maxsim(q, docs, b), repeats, 0.3
                    )
                    path = "torch" if (r_q, r_c) == (1, 1) and dname == "fp32" else "kernel"
                    if not info["available"]:
                        path = "torch"
                    elif path == "kernel":  # which kernel path ran: amx, direct, pairs, r1, staged
                        path = f"kernel ({scoring._kernel._ext.last_path()})"
                    flops = 2.0 * args.nq * n * r_q * r_c * dim
                    nbytes = float(n) * r_c * dim * itemsize
                    t_floor = max(nbytes / bw, flops / gemm)
                    t_naive = best_time(
                        lambda q=q, docs=docs, a=r_q, b=r_c: naive_einsum(q, docs, a, b),
                        1 if n >= 100_000 else repeats,
                    )
                    t_pylate = None
                    if pylate_fn is not None:
                        qd = q[:, :r_q].to(dtype)
                        # 16-bit einsum on the CPU runs at ~1 GFLOP/s: time PyLate on a 10k slice
                        # (per-candidate cost; this can only favour it) to keep the run short
                        m = n if dtype == torch.float32 else min(n, 10_000)
                        dd = docs[:m, :r_c]
                        t_pylate = best_time(
                            lambda qd=qd, dd=dd: pylate_fn(qd, dd), 1 if n >= 100_000 else repeats
                        )
                        t_pylate *= n / m
                    t_mcpu = None
                    if mcpu_fn is not None and dtype == torch.float32 and args.nq == 1:
                        qn = np.ascontiguousarray(q[0, :r_q].numpy())
                        # maxsim-cpu needs a contiguous (N, r_c, D) array: copied outside timing
                        dn = np.ascontiguousarray(docs[:, :r_c].numpy())
                        t_mcpu, mcpu_status = time_in_child(
                            lambda qn=qn, dn=dn: best_time(lambda: mcpu_fn(qn, dn), repeats)
                        )
                        if mcpu_status:
                            print(f"# maxsim-cpu D={dim} ({r_q},{r_c}): {mcpu_status}", flush=True)
                        del dn
                    row = {
                        "D": dim, "N": n, "dtype": dname, "budget": f"({r_q},{r_c})",
                        "ours": n / t_ours, "path": path, "floor_pct": 100.0 * t_floor / t_ours,
                        "floor": n / t_floor, "naive": n / t_naive,
                        "pylate": None if t_pylate is None else n / t_pylate,
                        "mcpu": None if t_mcpu is None else n / t_mcpu, "load": load,
                    }  # fmt: skip
                    rows.append(row)
                    print(
                        f"D={dim} N={n} {dname} ({r_q},{r_c}): ours {fmt_rate(n / t_ours)}/s "
                        f"[{path}] {row['floor_pct']:.0f}% of floor ({fmt_rate(n / t_floor)}/s); "
                        f"naive {fmt_rate(n / t_naive)}/s; pylate {fmt_rate(row['pylate'])}/s; "
                        f"maxsim-cpu {fmt_rate(row['mcpu'])}/s; load {load:.2f}",
                        flush=True,
                    )
                del docs
                gc.collect()

    def mcpu_cell(r: dict[str, object]) -> str:
        if r["dtype"] != "fp32":
            return "n/a (fp32 only)"
        return "crashed" if r["mcpu"] is None else fmt_rate(r["mcpu"])  # type: ignore[arg-type]

    def ratio(a: object, b: object) -> str:
        if a is None or b is None:
            return "n/a"
        return f"{float(a) / float(b):.1f}x"  # type: ignore[arg-type]

    print()
    print(
        f"Machine: {machine_description()}; {args.threads} threads for every method; nq={args.nq}"
    )
    print(f"Measured memory bandwidth {bw / 1e9:.1f} GB/s, GEMM {gemm / 1e9:.1f} GFLOP/s.")
    print(f"Command: python benchmarks/maxsim.py {' '.join(sys.argv[1:])}".rstrip())
    print()
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for r in rows:
        print(
            f"| {r['D']} | {r['N']} | {r['dtype']} | {r['budget']} | {fmt_rate(r['ours'])} | "
            f"{r['path']} | {r['floor_pct']:.0f}% | {fmt_rate(r['floor'])} | "
            f"{fmt_rate(r['naive'])} | {ratio(r['ours'], r['naive'])} | "
            f"{'not installed' if pylate_fn is None else fmt_rate(r['pylate'])} | "
            f"{ratio(r['ours'], r['pylate'])} | "
            f"{'not installed' if mcpu_fn is None else mcpu_cell(r)} | "
            f"{ratio(r['ours'], r['mcpu'])} | {r['load']:.2f} |"
        )


if __name__ == "__main__":
    main()
