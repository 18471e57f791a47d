"""The benchmark's GPT-style decoder, written as a person would (nn.Module), exported with
`veritrain model export benchmarks/decoder_module.py:decoder_25m --input-shape 8,128
--input-dtype int64`. The factory seeds torch, so each call gives the same weights."""

import torch
import torch.nn.functional as F
from torch import nn

VOCAB, CONTEXT, WIDTH, HEADS, LAYERS = 8192, 128, 512, 8, 8


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, h):
        batch, length, width = h.shape
        q, k, v = self.qkv(self.ln1(h)).split(width, dim=-1)
        q, k, v = (
            t.reshape(batch, length, self.heads, width // self.heads).transpose(1, 2)
            for t in (q, k, v)
        )
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.proj(attended.transpose(1, 2).reshape(batch, length, width))
        return h + self.fc2(F.gelu(self.fc1(self.ln2(h)), approximate="tanh"))


class Decoder(nn.Module):
    def __init__(self, vocab: int, context: int, width: int, heads: int, layers: int):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f, self.head = nn.LayerNorm(width), nn.Linear(width, vocab)

    def forward(self, tokens):
        # positions per token, not broadcast over the batch: keeps the residual add repro-safe
        h = self.tok(tokens) + self.pos(torch.arange(tokens.shape[1]).expand(tokens.shape))
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))


def decoder_25m() -> nn.Module:
    torch.manual_seed(0)
    return Decoder(VOCAB, CONTEXT, WIDTH, HEADS, LAYERS)
