"""Task heads for finetuning: regression or classification over pooled tokens.

The backbone's embedding (output of block ``layer``, pooled over tokens, as ``embed``) feeds
a small head. Unlike ``AstroPT.embed`` these functions keep gradients, so the backbone (or
its LoRA adapters) can be trained through them.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from astropt.model.astropt import AstroPT, main_embedding

# Linear layers of the transformer blocks that LoRA adapts (not the tokenisers).
LORA_TARGETS = r".*blocks\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)"


def pooled_features(
    model: AstroPT, batch: dict[str, torch.Tensor], layer: int | None = None, pool: str | None = None
) -> torch.Tensor:
    """``(B, model.feature_width(pool, names))`` main embedding of a batch, with gradients.

    The same vector as ``AstroPT.embed`` gives (and the embed task stores as ``embedding``).
    """
    return main_embedding(model.embedding_features(batch, layer, pool))


class TaskHead(nn.Module):
    """LayerNorm + (optional hidden layer) + Linear to ``n_out`` values or class logits."""

    def __init__(self, n_embd: int, n_out: int, hidden: int = 0, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.LayerNorm(n_embd)]
        if hidden:
            layers += [nn.Linear(n_embd, hidden), nn.GELU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden or n_embd, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class FinetuneModel(nn.Module):
    """A backbone (plain, or wrapped with LoRA adapters) and a head on its pooled embedding."""

    def __init__(self, backbone: nn.Module, head: TaskHead, layer: int | None = None, pool: str | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.layer = layer
        self.pool = pool

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(pooled_features(self.astropt, batch, self.layer, self.pool))

    @property
    def astropt(self) -> AstroPT:
        """The AstroPT module inside a possible peft wrapper."""
        model = self.backbone
        while not isinstance(model, AstroPT):
            model = model.base_model.model if hasattr(model, "base_model") else model.model
        return model
