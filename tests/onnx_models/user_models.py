"""The three user modules the tests export through `veritrain model export` (path:factory).

Each factory seeds torch first, so calling it again gives the exported weights."""

import torch
import torch.nn.functional as F
from torch import nn

GPT_BATCH, GPT_CONTEXT, GPT_VOCAB = 4, 16, 48
CNN_BATCH, CNN_SHAPE, CNN_CLASSES = 8, (3, 12, 12), 10
MLP_BATCH, MLP_INPUTS, MLP_OUTPUTS = 16, 12, 3


class DecoderBlock(nn.Module):
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


class TinyGPT(nn.Module):
    def __init__(self, width: int = 32, heads: int = 4, layers: int = 2):
        super().__init__()
        self.tok = nn.Embedding(GPT_VOCAB, width)
        self.pos = nn.Embedding(GPT_CONTEXT, width)
        self.blocks = nn.ModuleList(DecoderBlock(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, GPT_VOCAB)

    def forward(self, tokens):
        # positions per token (not broadcast over the batch): keeps the residual add repro-safe
        positions = torch.arange(tokens.shape[1]).expand(tokens.shape)
        h = self.tok(tokens) + self.pos(positions)
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(h)))


class TinyResNet(nn.Module):
    def __init__(self, channels: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(CNN_SHAPE[0], channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.pool = nn.MaxPool2d(2)
        self.block = ResidualBlock(channels)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, CNN_CLASSES)

    def forward(self, x):
        h = self.pool(F.relu(self.bn(self.stem(x))))
        return self.fc(torch.flatten(self.gap(self.block(h)), 1))


class SquashingMLP(nn.Module):
    def __init__(self, hidden: int = 24):
        super().__init__()
        self.l1, self.l2 = nn.Linear(MLP_INPUTS, hidden), nn.Linear(hidden, hidden)
        self.l3 = nn.Linear(hidden, MLP_OUTPUTS)

    def forward(self, x):
        return self.l3(torch.sigmoid(self.l2(torch.tanh(self.l1(x)))))


def gpt() -> nn.Module:
    torch.manual_seed(1)
    return TinyGPT()


def resnet() -> nn.Module:
    torch.manual_seed(2)
    return TinyResNet()


def mlp() -> nn.Module:
    torch.manual_seed(3)
    return SquashingMLP()


class RunningTotal(nn.Module):
    """Exports a CumSum node, which the table does not support."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(MLP_INPUTS, MLP_OUTPUTS)

    def forward(self, x):
        return torch.cumsum(self.linear(x), dim=1)


def running_total() -> nn.Module:
    torch.manual_seed(4)
    return RunningTotal()
