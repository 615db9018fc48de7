"""The compiled MaxSim kernel (``_maxsim.c``): whether it is there, which ISA path it may
use, and one call into it. The public functions are in :mod:`metaembed_rag.scoring`."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

logger = logging.getLogger("metaembed_rag.scoring")

_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
# "avx512-nodirect" disables the direct (no staging) AVX-512 path for float32 and bfloat16;
# "avx512-nopairs" also disables the two-vectors-per-register path used when r_q <= 8;
# "avx512-direct" uses the direct path for bfloat16 on any CPU with AVX512_BF16 (by default
# only on AMD, where vdpbf16ps runs at full rate). These three and "avx512-noamx" turn the AMX
# path (16-bit storage, D a multiple of 32, r_q >= 2; on by default where the CPU has AMX-BF16)
# off; "amx" is the default dispatch but refused on CPUs without AMX-BF16, so a test or
# benchmark that asks for it cannot silently run another path.
_AMX_FLAG = 256  # "amx": require the AMX path's CPU support (checked here, in _isa_code)
_ISA_CODES = {
    "generic": 0,
    "avx2": 1,
    "avx512": 2,
    "avx512-noamx": 2 | 128,
    "avx512-nodirect": 2 | 32 | 128,
    "avx512-nopairs": 2 | 16 | 32 | 128,
    "avx512-direct": 2 | 64 | 128,
    "amx": 2 | _AMX_FLAG,
}
_MODE_FULL, _MODE_PAIR, _MODE_IDS = 0, 1, 2

try:  # the compiled kernel is optional
    from . import _maxsim as _ext  # type: ignore[attr-defined]

    _EXT_ERROR: BaseException | None = None
except ImportError as _err:  # pragma: no cover - depends on the build
    _ext = None
    _EXT_ERROR = _err

_BUILD_HINT = (
    "build it with a C compiler present: `pip install -e .` (or `python setup.py build_ext "
    "--inplace`) in the metaembed-rag source tree"
)
_warned_unavailable = False


# ------------------------------------------------------------------------------------------------
# Kernel availability


def kernel_available() -> bool:
    """Whether the compiled CPU MaxSim kernel was built and loads on this machine.

    >>> isinstance(kernel_available(), bool)
    True
    """
    return _ext is not None


def kernel_info() -> dict[str, Any]:
    """Describe the compiled kernel: availability, instruction set and load error if any.

    ``amx`` says whether the AMX-BF16 path for 16-bit storage can run here.

    >>> sorted(kernel_info())
    ['amx', 'available', 'error', 'isa', 'threads']
    """
    return {
        "available": _ext is not None,
        "isa": _ext.best_isa() if _ext is not None else None,
        "amx": bool(_ext.amx_supported()) if _ext is not None else False,
        "threads": torch.get_num_threads(),
        "error": None if _EXT_ERROR is None else repr(_EXT_ERROR),
    }


def _warn_unavailable_once() -> None:
    global _warned_unavailable
    if not _warned_unavailable:
        _warned_unavailable = True
        logger.warning(
            "metaembed_rag.scoring: compiled MaxSim kernel not available (%s); using the slower "
            "pure-torch path. To get the kernel, %s.",
            _EXT_ERROR,
            _BUILD_HINT,
        )


def unavailable_message() -> str:
    """Why the kernel cannot run, and how to build it."""
    return (
        f"backend='kernel' requested but the compiled MaxSim kernel is not available "
        f"({_EXT_ERROR}); {_BUILD_HINT}, or use backend='torch'."
    )


def _isa_code() -> int:
    name = os.environ.get("METAEMBED_RAG_MAXSIM_ISA", "").strip().lower()
    if not name:
        return -1
    if name not in _ISA_CODES:
        raise ValueError(f"METAEMBED_RAG_MAXSIM_ISA={name!r}: expected one of {sorted(_ISA_CODES)}")
    code = _ISA_CODES[name]
    assert _ext is not None
    if not _ext.isa_supported(code & 15) or (code & _AMX_FLAG and not _ext.amx_supported()):
        raise RuntimeError(f"METAEMBED_RAG_MAXSIM_ISA={name!r} is not supported by this CPU")
    return code


def _num_threads(work: float) -> int:
    threads = max(1, torch.get_num_threads())
    if work < 2e5:  # too little work to pay for starting threads
        return 1
    return threads


def _query_rows(q: torch.Tensor, r_q: int) -> torch.Tensor:
    q = q[:, :r_q]
    if q.stride(-1) != 1:
        q = q.contiguous()
    return q


# ------------------------------------------------------------------------------------------------
# Kernel backend


def _kernel_call(
    q: torch.Tensor,
    r_q: int,
    d_ptr: int,
    dtype: torch.dtype,
    d_s0: int,
    d_s1: int,
    r_c: int,
    dim: int,
    mode: int,
    m: int,
    ids: torch.Tensor | None = None,
    pair_s0: int = 0,
) -> torch.Tensor:
    assert _ext is not None
    nq = int(q.shape[0])
    out = torch.empty((nq, m), dtype=torch.float32)
    if nq == 0 or m == 0:
        return out
    q = _query_rows(q.cpu(), r_q)
    ids_ptr, ids_s0, ids_s1 = (0, 0, 0) if ids is None else (ids.data_ptr(), *ids.stride())
    work = float(nq) * m * max(r_q, 8) * r_c * dim
    _ext.score(
        out.data_ptr(), out.stride(0), out.stride(1),
        q.data_ptr(), nq, q.stride(0), q.stride(1), r_q,
        d_ptr, _DTYPE_CODES[dtype], d_s0, d_s1, r_c, dim,
        mode, ids_ptr, ids_s0, ids_s1, m, pair_s0,
        _num_threads(work), _isa_code(),
    )  # fmt: skip
    return out
