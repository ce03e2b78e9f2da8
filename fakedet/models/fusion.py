"""Attention fusion of the full model: perceptual tokens query the forensic tokens, then all mix."""

from __future__ import annotations

import torch
from torch import nn


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
        attended, _ = self.attention(self.norm_query(query), context, context, need_weights=False)
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
        attended, _ = self.attention(normed, normed, normed, need_weights=False)
        tokens = tokens + attended
        return tokens + self.mlp(self.norm_mlp(tokens))  # (B, N, D)
