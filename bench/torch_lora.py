#!/usr/bin/env python3
"""PyTorch fp32 LoRA training step on the CPU: the yardstick for bench/train.ts, run tuned.

Same shapes as webqlora's synthetic models (src/model/synthetic.ts), a plain Llama decoder
written here (RMSNorm, rotate-half RoPE, GQA attention, SwiGLU), base weights frozen in float32,
LoRA on all seven linear layers (A, B trainable, no dropout), AdamW, one forward+backward+step
per measurement. Never run in CI (torch is not a project dependency); bench/run.ts calls it only
when `python3 -c 'import torch'` works.

Tuned the way a performance engineer runs torch on a small CPU box (issue 12), unless --untuned:
  * OMP_WAIT_POLICY=PASSIVE before torch is loaded: libgomp's workers sleep between parallel
    regions instead of spinning against OpenBLAS's own threads;
  * OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed: some machines set them, and they force an
    older BLAS kernel (OpenBLAS then picks the core it detects);
  * jemalloc preloaded with MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 when Debian's
    libjemalloc2 is installed: freed activation buffers stay mapped instead of being returned
    and re-faulted every step (glibc malloc);
  * threads = the cores this process may run on (torch and OpenBLAS alike);
  * --warmup steps (default 1) before the --steps timed ones.
LD_PRELOAD and the BLAS variables are read when the libraries load, so the script re-executes
itself once with the tuned environment. It prints the settings it ran with (stderr, and
"settings" in the JSON), including the BLAS library and core torch really loaded.

  python3 bench/torch_lora.py --model stories15M --batch 4 --seq 256 --steps 3 [--threads 2] [--untuned] [--checkpointing]
prints one JSON line: {"model", "seq", "batch", "tokens_per_s" (median timed step), "step_seconds"
(timed), "warmup_seconds", "threads", "torch", "settings"}.

  python3 bench/torch_lora.py --model stories15M --batches FILE [--warmup 1]
runs on the very micro-batches a webqlora run consumed (bench/train.ts --data … --dump-batches FILE:
the same examples, the same right padding to each batch's longest, targets −100 on prompts and
padding), one step per batch, the first --warmup ones untimed; the head as transformers computes
it (logits of every position, then cross-entropy with ignore_index=-100, the mean over scored
tokens). tokens_per_s is then the batches' example tokens over the timed wall time (and
positions_per_s their B·T), as bench/train.ts counts them.
"""
import argparse
import json
import math
import os
import sys
import time

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
MALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
DROPPED = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# set in the re-executed process: "1", then the dropped variables as NAME=value;…
MARK = "_WEBQLORA_TORCH_TUNED"
MARK_DROPPED = "_WEBQLORA_TORCH_DROPPED"


def cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def tuned_env(env, threads):
    """The environment the tuned run needs (a copy), and the variables it removed."""
    e = dict(env)
    dropped = {k: e.pop(k) for k in DROPPED if k in e}
    e["OMP_WAIT_POLICY"] = "PASSIVE"
    e["OMP_NUM_THREADS"] = e["OPENBLAS_NUM_THREADS"] = str(threads)
    if os.path.exists(JEMALLOC):
        pre = [p for p in e.get("LD_PRELOAD", "").replace(":", " ").split() if p]
        if JEMALLOC not in pre:
            e["LD_PRELOAD"] = " ".join([JEMALLOC] + pre)
        e["MALLOC_CONF"] = MALLOC_CONF
    return e, dropped


def tune(threads):
    """Re-executes this script once under the tuned environment (before torch is imported)."""
    if os.environ.get(MARK) == "1":
        return
    if "torch" in sys.modules:
        raise RuntimeError("bench/torch_lora.py: torch was imported before the environment was tuned")
    env, dropped = tuned_env(os.environ, threads)
    env[MARK] = "1"
    env[MARK_DROPPED] = ";".join(f"{k}={v}" for k, v in dropped.items())
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def loaded_libraries(*needles):
    """Paths of the shared libraries mapped into this process whose name contains a needle."""
    found = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1] if line.count("/") else ""
                name = os.path.basename(path).lower()
                if any(n in name for n in needles) and path not in found:
                    found.append(path)
    except OSError:
        pass
    return found


def blas_description():
    """The BLAS torch really called (after a GEMM has run): library path and OpenBLAS core."""
    libs = [os.path.realpath(p) for p in loaded_libraries("blas", "mkl")]
    core = config = None
    for p in libs:
        try:
            import ctypes
            lib = ctypes.CDLL(p)
            for fn in ("openblas_get_corename", "openblas_get_config"):
                if hasattr(lib, fn):
                    getattr(lib, fn).restype = ctypes.c_char_p
            if hasattr(lib, "openblas_get_corename"):
                core = lib.openblas_get_corename().decode()
                config = lib.openblas_get_config().decode()
                break
        except OSError:
            continue
    return {"libraries": sorted(set(libs)), "openblas_core": core, "openblas_config": config}


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="stories15M")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="0: the cores this process may use")
    ap.add_argument("--checkpointing", action="store_true")
    ap.add_argument("--batches", help="JSON of micro-batches from bench/train.ts --dump-batches (overrides --batch/--seq/--steps)")
    ap.add_argument("--untuned", action="store_true", help="run in the environment as given (the old yardstick)")
    return ap.parse_args()


if __name__ == "__main__":
    ARGS = parse_args()
    if not ARGS.untuned:
        tune(ARGS.threads or cores())

import torch  # noqa: E402  after tune(): the environment must be final when torch and its BLAS load
import torch.nn.functional as F  # noqa: E402

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


def settings(a):
    """What this run really used: environment, allocator, BLAS, torch build."""
    tuned = os.environ.get(MARK) == "1"
    dropped = [d for d in os.environ.get(MARK_DROPPED, "").split(";") if d] if tuned else []
    kept = [f"{k}={os.environ[k]}" for k in DROPPED if k in os.environ]
    jem = loaded_libraries("jemalloc")
    where = "Debian python3-torch" if torch.__file__.startswith("/usr/lib/python3/") else f"from {os.path.dirname(os.path.dirname(torch.__file__))}"
    cap = next((ln.split(":", 1)[1].strip() for ln in torch.__config__.show().splitlines() if "CPU capability usage" in ln), "?")
    blas = blas_description()
    s = {
        "tuned": tuned,
        "torch": torch.__version__, "torch_build": where, "cpu_capability": cap,
        "threads": torch.get_num_threads(), "cores": cores(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "removed": dropped, "kept": kept,
        "jemalloc": jem[0] if jem else None,
        "MALLOC_CONF": os.environ.get("MALLOC_CONF") if jem else None,
        "blas": blas,
        "warmup_steps": a.warmup,
    }
    if blas["openblas_config"]:
        lib = " ".join(blas["openblas_config"].split()[:2])  # "OpenBLAS 0.3.21"
    elif any("/blas/" in p for p in blas["libraries"]):
        lib = "reference BLAS (netlib: slow, install libopenblas0)"
    else:
        lib = ", ".join(os.path.basename(p) for p in blas["libraries"]) or "BLAS not found"
    parts = [f"torch {torch.__version__} ({where}, {cap})", lib + (f" core {blas['openblas_core']}" if blas["openblas_core"] else ""),
             f"{s['threads']} threads", f"OMP_WAIT_POLICY={s['OMP_WAIT_POLICY'] or 'unset'}"]
    if dropped:
        parts.append("removed " + " ".join(dropped))
    if kept:
        parts.append("kept " + " ".join(kept))
    parts.append(f"jemalloc {s['MALLOC_CONF']}" if jem else ("glibc malloc (libjemalloc2 not installed)" if not os.path.exists(JEMALLOC) else "glibc malloc"))
    parts.append(f"{a.warmup} warm-up step{'s' if a.warmup != 1 else ''}")
    s["summary"] = ("tuned: " if tuned else "UNTUNED: ") + ", ".join(parts)
    return s


def main(a):
    torch.set_num_threads(a.threads or cores())
    torch.manual_seed(0)
    C, Fd, L, H, KVH, V, tied = SHAPES[a.model]
    emb = torch.randn(V, C) * 0.02
    head = emb if tied else torch.randn(V, C) * 0.02
    blocks = torch.nn.ModuleList([Block(C, Fd, H, KVH, a.lora_r, 2 * a.lora_r) for _ in range(L)])
    batches = None
    if a.batches:
        with open(a.batches) as f:
            dump = json.load(f)
        if dump["vocab_size"] != V:
            raise SystemExit(f"{a.batches}: batches of a {dump['vocab_size']}-token vocabulary, but {a.model} has {V}")
        batches = dump["batches"]
    D = C // H
    inv = 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D))
    ang = torch.arange(max(b["T"] for b in batches) if batches else a.seq).float()[:, None] * inv[None, :]
    cos, sin = ang.cos(), ang.sin()
    params = [p for p in blocks.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0)

    def step(ids, targets):
        T = ids.shape[1]
        x = emb[ids]
        for blk in blocks:
            if a.checkpointing:
                x = torch.utils.checkpoint.checkpoint(blk, x, cos[:T], sin[:T], use_reentrant=False)
            else:
                x = blk(x, cos[:T], sin[:T])
        x = Block.norm(x, torch.ones(C))
        logits = x @ head.T  # every position, as transformers' lm_head
        if targets is None:  # random full rows: every next token scored
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
        else:
            loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.3)
        opt.step()
        opt.zero_grad()

    if batches:
        data = [(torch.tensor(b["ids"]).view(b["B"], b["T"]), torch.tensor(b["targets"]).view(b["B"], b["T"])) for b in batches]
        warm = []
        for ids, targets in data[: a.warmup]:
            t0 = time.perf_counter()
            step(ids, targets)
            warm.append(time.perf_counter() - t0)
        timed, t0 = [], time.perf_counter()
        for ids, targets in data[a.warmup:]:
            t1 = time.perf_counter()
            step(ids, targets)
            timed.append(time.perf_counter() - t1)
        seconds = time.perf_counter() - t0
        rest = batches[a.warmup:]
        s = settings(a)
        out = {"model": a.model, "batches": len(rest), "seconds": seconds,
               "tokens_per_s": sum(b["tokens"] for b in rest) / seconds, "positions_per_s": sum(b["B"] * b["T"] for b in rest) / seconds,
               "step_seconds": timed, "warmup_seconds": warm}
    else:
        times = []
        for _ in range(a.warmup + a.steps):
            ids = torch.randint(0, V, (a.batch, a.seq))
            t0 = time.perf_counter()
            step(ids, None)
            times.append(time.perf_counter() - t0)
        warm, timed = times[: a.warmup], times[a.warmup:] or times
        median = sorted(timed)[len(timed) // 2]
        s = settings(a)
        out = {"model": a.model, "seq": a.seq, "batch": a.batch, "tokens_per_s": a.batch * a.seq / median,
               "step_seconds": timed, "warmup_seconds": warm}
    print(f"torch_lora: {s['summary']}", file=sys.stderr)
    print(json.dumps({**out, "threads": torch.get_num_threads(), "torch": torch.__version__, "settings": s}))


if __name__ == "__main__":
    main(ARGS)
