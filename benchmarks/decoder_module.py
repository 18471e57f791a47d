"""The benchmark's GPT-style decoder, written as a person would (nn.Module), exported with
`veritrain model export benchmarks/decoder_module.py:decoder_25m --input-shape 8,128
--input-dtype int64` from the repository root (its block is the tests' decoder block, at full
size). The factory seeds torch, so each call gives the same weights."""

import torch
from torch import nn

from tests.onnx_models.user_models import DecoderBlock as Block  # the tests' decoder block

VOCAB, CONTEXT, WIDTH, HEADS, LAYERS = 8192, 128, 512, 8, 8


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
