#!/usr/bin/env python3
"""PyTorch fp32 LoRA training step on the CPU: the yardstick for bench/train.ts.

Same shapes as webqlora's synthetic models (src/model/synthetic.ts), a plain Llama decoder
written here (RMSNorm, rotate-half RoPE, GQA attention, SwiGLU), base weights frozen in float32,
LoRA on all seven linear layers (A, B trainable), AdamW, one forward+backward+step per
measurement. Never run in CI (torch is not a project dependency); bench/run.ts calls it only when
`python3 -c 'import torch'` works.

  python3 bench/torch_lora.py --model stories15M --seq 256 --steps 3 [--checkpointing] [--threads 2]
prints one JSON line: {"model", "seq", "tokens_per_s", "step_seconds", "threads", "torch"}.
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

SHAPES = {
    # hidden, ffn, layers, heads, kv heads, vocab, tied head
    "stories15M": (288, 768, 6, 6, 6, 32000, True),
    "stories110M": (768, 2048, 12, 12, 12, 32000, True),
    "tinyllama-1.1b": (2048, 5632, 22, 32, 4, 32000, False),
}


class LoraLinear(torch.nn.Module):
    def __init__(self, n_in, n_out, r, alpha):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(n_out, n_in) * 0.02, requires_grad=False)
        self.A = torch.nn.Parameter(torch.empty(r, n_in).uniform_(-1 / math.sqrt(n_in), 1 / math.sqrt(n_in)))
        self.B = torch.nn.Parameter(torch.zeros(n_out, r))
        self.s = alpha / r

    def forward(self, x):
        return F.linear(x, self.weight) + self.s * F.linear(F.linear(x, self.A), self.B)


class Block(torch.nn.Module):
    def __init__(self, C, Fd, H, KVH, r, alpha):
        super().__init__()
        D = C // H
        self.H, self.KVH, self.D = H, KVH, D
        self.q = LoraLinear(C, H * D, r, alpha)
        self.k = LoraLinear(C, KVH * D, r, alpha)
        self.v = LoraLinear(C, KVH * D, r, alpha)
        self.o = LoraLinear(H * D, C, r, alpha)
        self.gate = LoraLinear(C, Fd, r, alpha)
        self.up = LoraLinear(C, Fd, r, alpha)
        self.down = LoraLinear(Fd, C, r, alpha)
        self.n1 = torch.nn.Parameter(torch.ones(C), requires_grad=False)
        self.n2 = torch.nn.Parameter(torch.ones(C), requires_grad=False)

    @staticmethod
    def norm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    def forward(self, x, cos, sin):
        Bn, T, C = x.shape
        h = self.norm(x, self.n1)
        q = self.q(h).view(Bn, T, self.H, self.D).transpose(1, 2)
        k = self.k(h).view(Bn, T, self.KVH, self.D).transpose(1, 2)
        v = self.v(h).view(Bn, T, self.KVH, self.D).transpose(1, 2)

        def rope(t):
            a, b = t[..., : self.D // 2], t[..., self.D // 2:]
            return torch.cat([a * cos - b * sin, b * cos + a * sin], -1)

        q, k = rope(q), rope(k)
        if self.KVH != self.H:
            k = k.repeat_interleave(self.H // self.KVH, 1)
            v = v.repeat_interleave(self.H // self.KVH, 1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.D)
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        att = scores.masked_fill(mask, float("-inf")).softmax(-1) @ v
        x = x + self.o(att.transpose(1, 2).reshape(Bn, T, C))
        h = self.norm(x, self.n2)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="stories15M")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--checkpointing", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    C, Fd, L, H, KVH, V, tied = SHAPES[a.model]
    emb = torch.randn(V, C) * 0.02
    head = emb if tied else torch.randn(V, C) * 0.02
    blocks = torch.nn.ModuleList([Block(C, Fd, H, KVH, a.lora_r, 2 * a.lora_r) for _ in range(L)])
    D = C // H
    inv = 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D))
    ang = torch.arange(a.seq).float()[:, None] * inv[None, :]
    cos, sin = ang.cos(), ang.sin()
    params = [p for p in blocks.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0)
    times = []
    for _ in range(a.steps):
        ids = torch.randint(0, V, (a.batch, a.seq))
        t0 = time.perf_counter()
        x = emb[ids]
        for blk in blocks:
            if a.checkpointing:
                x = torch.utils.checkpoint.checkpoint(blk, x, cos, sin, use_reentrant=False)
            else:
                x = blk(x, cos, sin)
        x = Block.norm(x, torch.ones(C))
        logits = x @ head.T
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.3)
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    timed = times[1:] if len(times) > 1 else times
    print(json.dumps({"model": a.model, "seq": a.seq, "batch": a.batch, "tokens_per_s": a.batch * a.seq / (sum(timed) / len(timed)),
                      "step_seconds": times, "threads": torch.get_num_threads(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
