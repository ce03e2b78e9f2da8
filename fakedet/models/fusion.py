"""Attention fusion of the full model: perceptual tokens query the forensic tokens, then all mix."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel


def _attention_kernel(tokens: torch.Tensor) -> Any:
    """Under CPU bf16 autocast, the math attention kernel (batched matrix products and a
    softmax) instead of the flash one, whose bf16 backward took 3x its fp32 time on a CPU with
    native bf16 (27.5 against 9.4 ms a step, benchmarks/breakdown.py): the full model's bf16
    step went 1.21x -> 1.28x fp32's. Elsewhere PyTorch's own choice."""
    if tokens.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


class CrossModalBlock(nn.Module):
    """Perceptual tokens attend to spectral and statistical tokens (pre-norm, residual)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        context = self.norm_context(context)
        with _attention_kernel(query):
            attended, _ = self.attention(
                self.norm_query(query), context, context, need_weights=False
            )
        query = query + attended
        return query + self.mlp(self.norm_mlp(query))  # (B, Nq, D)


class SelfAttentionBlock(nn.Module):
    """Pre-norm transformer block over every token."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_attention = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        normed = self.norm_attention(tokens)
        with _attention_kernel(tokens):
            attended, _ = self.attention(normed, normed, normed, need_weights=False)
        tokens = tokens + attended
        return tokens + self.mlp(self.norm_mlp(tokens))  # (B, N, D)
