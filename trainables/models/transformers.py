"""A vision transformer and an MLP-Mixer sized for CIFAR and Tiny ImageNet.

Patch rule: the patch side is the input side / 8 (rounded, at least 1), so
every input is cut into an 8x8 grid of 64 patch tokens: patch 4 on CIFAR's
32x32 (ViT-Lite-7/4 of Hassani et al. 2021, "Escaping the Big Data Paradigm
with Compact Transformers"; Lee et al. 2021, "Vision Transformer for
Small-Size Datasets"), patch 8 on Tiny ImageNet's 64x64 (what Lee et al. and
Gani et al. 2022, "How to Train Vision Transformer on Small-scale Datasets?",
use there: 64 tokens, where patch 4 would make 256 and 16x the attention
cost), and patch 1 on the 8x8 digits.

- `vit`: ViT-Lite-7/4 of Hassani et al.: 7 pre-norm encoder blocks, width
  256, 4 heads, MLP ratio 2, a class token and a learned position embedding,
  a final LayerNorm and a linear head on the class token (3.7M parameters on
  CIFAR-10, as their table lists).
- `mixer`: the Mixer-S layout of Tolstikhin et al. 2021 ("MLP-Mixer", 8
  blocks, token-mixing MLP width C/2, channel-mixing 4C) at half its width,
  C = 256, the scale of the CIFAR Mixers trained from scratch; global
  average pooling over tokens, then a linear head.
- `vit_tiny`, `mixer_tiny`: the same networks at depth 2, width 32, for
  tests and CPU smoke runs.

Attention has explicit `nn.Linear` query, key, value and output projections
(not `nn.MultiheadAttention`, whose fused in-projection is no `nn.Linear`),
so every weight matrix is a prunable layer. There is no dropout: a trial's
determinism relies on it. Initialization as timm's ViT: `trunc_normal_(std=0.02)`
(its default cut at +-2 is 100 std away, so in effect a normal) for every
linear weight, the patch projection and the position embedding, zero biases,
LayerNorm 1/0, the class token normal with std 1e-6.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Tuple

import torch
from torch import nn

from trainables.models.common import MODELS, image_shape

TOKENS_PER_SIDE = 8
INIT_STD = 0.02
CLASS_TOKEN_STD = 1e-6

VIT_SIZES = {"vit": dict(depth=7, width=256, heads=4, mlp_ratio=2),
             "vit_tiny": dict(depth=2, width=32, heads=2, mlp_ratio=2)}
MIXER_SIZES = {"mixer": dict(depth=8, width=256, token_hidden=128, channel_hidden=1024),
               "mixer_tiny": dict(depth=2, width=32, token_hidden=16, channel_hidden=64)}


def patch_size(height: int, width: int) -> int:
    """Input side / 8, rounded (at least 1): an 8x8 grid of patches on square inputs."""
    return max(1, round(min(height, width) / TOKENS_PER_SIDE))


def two_layer_mlp(features: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(fc1=nn.Linear(features, hidden), act=nn.GELU(), fc2=nn.Linear(hidden, features)))


class PatchTokens(nn.Module):
    """Non-overlapping patches (a conv with kernel = stride = patch) as a (batch, tokens, width) sequence."""

    def __init__(self, channels: int, width: int, patch: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(channels, width, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x).flatten(2).transpose(1, 2)


class TokenEmbedding(nn.Module):
    """Patch tokens, a learned class token in front, plus a learned position embedding."""

    def __init__(self, channels: int, width: int, patch: int, patches: int) -> None:
        super().__init__()
        self.patches = PatchTokens(channels, width, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.position = nn.Parameter(torch.zeros(1, patches + 1, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.position


class SelfAttention(nn.Module):
    """Multi-head self-attention with its own query, key, value and output `nn.Linear`s.

    The softmax is an `nn.Softmax` module so the pruning code can swap it on its
    own copies (SynFlow's linearised network, the effective-weight count).
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not a multiple of its {heads} heads")
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.softmax = nn.Softmax(dim=-1)
        self.proj = nn.Linear(width, width)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        return x.reshape(batch, tokens, self.heads, width // self.heads).transpose(1, 2)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        weights = self.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5)
        out = weights @ v
        return out.transpose(1, 2).flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.attend(self.query(x), self.key(x), self.value(x)))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = two_layer_mlp(width, width * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, channels: int, patch: int, patches: int, num_classes: int, depth: int, width: int,
                 heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.embedding = TokenEmbedding(channels, width, patch, patches)
        self.blocks = nn.Sequential(*(EncoderBlock(width, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embedding(x)))[:, 0])


class MixerBlock(nn.Module):
    """x + token-mixing MLP across patches (per channel), then x + channel-mixing MLP (per patch)."""

    def __init__(self, tokens: int, width: int, token_hidden: int, channel_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.token_mixing = two_layer_mlp(tokens, token_hidden)
        self.norm2 = nn.LayerNorm(width)
        self.channel_mixing = two_layer_mlp(width, channel_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mixing(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mixing(self.norm2(x))


class MLPMixer(nn.Module):
    def __init__(self, channels: int, patch: int, patches: int, num_classes: int, depth: int, width: int,
                 token_hidden: int, channel_hidden: int) -> None:
        super().__init__()
        self.patches = PatchTokens(channels, width, patch)
        self.blocks = nn.Sequential(*(MixerBlock(patches, width, token_hidden, channel_hidden)
                                      for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.patches(x))).mean(dim=1))


@torch.no_grad()
def init_like_timm(model: nn.Module) -> None:
    """Truncated normal 0.02 for linear weights, the patch projection and the position embedding; zero biases."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, std=INIT_STD)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, TokenEmbedding):
            nn.init.trunc_normal_(module.position, std=INIT_STD)
            nn.init.normal_(module.cls_token, std=CLASS_TOKEN_STD)


def _grid(name: str, input_shape: Tuple[int, ...]) -> Tuple[int, int, int]:
    """(channels, patch, patch tokens) for an input shape."""
    channels, height, width = image_shape(name, input_shape)
    patch = patch_size(height, width)
    return channels, patch, (height // patch) * (width // patch)


def vit(input_shape: Tuple[int, ...], num_classes: int, *, name: str) -> VisionTransformer:
    channels, patch, patches = _grid(name, input_shape)
    model = VisionTransformer(channels, patch, patches, num_classes, **VIT_SIZES[name])
    init_like_timm(model)
    return model


def mixer(input_shape: Tuple[int, ...], num_classes: int, *, name: str) -> MLPMixer:
    channels, patch, patches = _grid(name, input_shape)
    model = MLPMixer(channels, patch, patches, num_classes, **MIXER_SIZES[name])
    init_like_timm(model)
    return model


def _register_all() -> None:
    for name in VIT_SIZES:
        MODELS.register(name)(partial(vit, name=name))
    for name in MIXER_SIZES:
        MODELS.register(name)(partial(mixer, name=name))


_register_all()
