"""The process set-up both entry points share: device, torch threads, matmul precision, seed.

Why one module: no entry point imports another, so the training and backtest CLIs both call
:func:`setup` here, with plain values from their typed configs.
"""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an explicit cuda without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={name} requested but CUDA is not available; use device=auto or cpu"
        )
    return device


def setup(
    device: str,
    threads: int = 0,
    *,
    matmul_precision: str | None = None,
    seed: int | None = None,
) -> torch.device:
    """Apply the process-wide torch settings, then resolve ``device``.

    ``threads`` > 0 sets torch's intra-op threads (0 keeps torch's default);
    ``matmul_precision`` is torch's float32 matmul precision (process-wide); ``seed`` seeds
    torch's global generator. None leaves a setting as it is.
    """
    if threads > 0:
        torch.set_num_threads(threads)
    if matmul_precision is not None:
        torch.set_float32_matmul_precision(matmul_precision)
    if seed is not None:
        torch.manual_seed(seed)
    return resolve_device(device)
