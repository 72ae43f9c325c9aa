"""evo's default target: a small byte-level GPT trained for a fixed time budget.

This is the mutable part: candidates change anything here (architecture, optimizer,
schedule, hyperparameters). prepare.py (data, data order, time budget, metric) is
fixed. Run from the repo root as `python model/train.py`; see model/README.md.
"""

import time

T_START = time.time()

# --- hyperparameters: module-level literals, one per line (evo's offline mutation perturbs these) ---
DEPTH = 2                  # transformer blocks (CPU)
WIDTH = 64                # model width (CPU)
BATCH_SIZE = 8            # sequences per optimizer step (CPU)
GPU_DEPTH = 6              # transformer blocks when training on CUDA  # evo: inert on cpu
GPU_WIDTH = 384            # model width when training on CUDA  # evo: inert on cpu
GPU_BATCH_SIZE = 64        # sequences per optimizer step on CUDA  # evo: inert on cpu
HEAD_DIM = 32              # width of one attention head
MLP_RATIO = 4              # MLP hidden width = MLP_RATIO * width
SEQ_LEN = 256              # training context in bytes (at most prepare.MAX_SEQ_LEN)
ROPE_BASE = 10000.0        # rotary position embedding base
USE_QK_NORM = True         # RMS-normalise queries and keys before attention
EMBED_LR = 0.06            # AdamW learning rate of the token embedding
HEAD_LR = 0.02            # AdamW learning rate of the output head
MATRIX_LR = 0.02          # AdamW learning rate of the block matrices (when not Muon)
USE_MUON = True           # Muon (orthogonalised momentum) for the block matrices
MUON_LR = 0.04             # Muon learning rate
MUON_MOMENTUM = 0.95       # Muon momentum (Nesterov)
ADAM_BETA1 = 0.9           # AdamW beta1
ADAM_BETA2 = 0.95          # AdamW beta2
ADAM_EPS = 1e-8            # AdamW epsilon
WEIGHT_DECAY = 0.0         # decoupled weight decay on the block matrices
GRAD_CLIP = 1.0            # clip the global gradient norm to this (0 turns it off)
WARMUP_STEPS = 3          # linear learning-rate warm-up, in steps
WARMDOWN_RATIO = 0.4       # final share of the budget with a linear decay of the learning rate
FINAL_LR_FRAC = 0.0        # learning-rate multiplier at the end of the warm-down
INIT_SCALE = 1.0           # multiplier on the default init of the block matrices
HEAD_INIT_STD = 0.001      # init std of the output head (small: the first loss is ~ln 256)
DIVERGENCE_FACTOR = 2.0    # fail fast when the loss exceeds this multiple of the first loss (a guard, not a knob)  # evo: fixed
USE_COMPILE = False        # torch.compile the model on CUDA (its compile steps eat the warm-up)  # evo: inert on cpu

import math
import os
import resource
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepare import (MAX_SEQ_LEN, VOCAB_SIZE, Budget, Data, DataError, Loader,  # noqa: E402
                     evaluate_bpb, progress_line)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def fail(msg: str) -> None:
    print(f"FAIL: {msg}", flush=True)
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


# --- model ---------------------------------------------------------------------------------------


def rotary(x, cos, sin):
    """Rotate pairs (first half, second half) of the last dim; x is (B, T, H, D)."""
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class Block(nn.Module):
    def __init__(self, width, n_head):
        super().__init__()
        self.n_head, self.head_dim = n_head, width // n_head
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        self.fc = nn.Linear(width, int(MLP_RATIO * width), bias=False)
        self.out = nn.Linear(int(MLP_RATIO * width), width, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q, k, v = self.qkv(F.rms_norm(x, (C,))).view(B, T, 3, self.n_head, self.head_dim).unbind(2)
        if USE_QK_NORM:
            q, k = F.rms_norm(q, (self.head_dim,)), F.rms_norm(k, (self.head_dim,))
        q, k = rotary(q, cos, sin).to(v.dtype), rotary(k, cos, sin).to(v.dtype)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.relu(self.fc(F.rms_norm(x, (C,)))).square())


class GPT(nn.Module):
    """Pre-norm transformer, parameter-free RMSNorm, rotary positions, ReLU^2 MLP, untied head."""

    def __init__(self, depth, width):
        super().__init__()
        n_head = max(1, round(width / HEAD_DIM))
        head_dim = max(2, width // n_head // 2 * 2)  # rotary needs an even head width
        width = n_head * head_dim
        self.width, self.depth = width, depth
        self.embed = nn.Embedding(VOCAB_SIZE, width)
        self.blocks = nn.ModuleList(Block(width, n_head) for _ in range(depth))
        self.head = nn.Linear(width, VOCAB_SIZE, bias=False)
        inv_freq = 1.0 / (ROPE_BASE ** (torch.arange(0, head_dim, 2).float() / head_dim))
        angles = torch.outer(torch.arange(MAX_SEQ_LEN).float(), inv_freq)
        self.register_buffer("cos", angles.cos()[None, :, None, :], persistent=False)
        self.register_buffer("sin", angles.sin()[None, :, None, :], persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        nn.init.normal_(self.embed.weight, std=1.0)
        nn.init.normal_(self.head.weight, std=HEAD_INIT_STD)
        for b in self.blocks:
            for lin in (b.qkv, b.fc):
                bound = INIT_SCALE * math.sqrt(3.0 / lin.in_features)
                nn.init.uniform_(lin.weight, -bound, bound)
            nn.init.zeros_(b.proj.weight)  # residual branches start as identity
            nn.init.zeros_(b.out.weight)

    def forward(self, idx):
        T = idx.size(1)
        x = F.rms_norm(self.embed(idx), (self.width,))
        cos, sin = self.cos[:, :T].to(x.dtype), self.sin[:, :T].to(x.dtype)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.head(F.rms_norm(x, (self.width,)))


# --- optimizers (hand-written: torch.optim imports torch._dynamo, about 1 s on a small CPU) -------


class AdamW:
    def __init__(self, groups):
        self.groups = [dict(g, params=list(g["params"])) for g in groups]
        for g in self.groups:
            g["m"] = [torch.zeros_like(p) for p in g["params"]]
            g["v"] = [torch.zeros_like(p) for p in g["params"]]
        self.t = 0

    @torch.no_grad()
    def step(self, lr_mult):
        self.t += 1
        bc1, bc2 = 1 - ADAM_BETA1 ** self.t, 1 - ADAM_BETA2 ** self.t
        for g in self.groups:
            ps, ms, vs = g["params"], g["m"], g["v"]
            grads = [p.grad for p in ps]
            lr = g["lr"] * lr_mult
            if g.get("wd", 0.0):
                torch._foreach_mul_(ps, 1 - lr * g["wd"])
            torch._foreach_lerp_(ms, grads, 1 - ADAM_BETA1)
            torch._foreach_mul_(vs, ADAM_BETA2)
            torch._foreach_addcmul_(vs, grads, grads, value=1 - ADAM_BETA2)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_div_(denom, math.sqrt(bc2))
            torch._foreach_add_(denom, ADAM_EPS)
            torch._foreach_addcdiv_(ps, ms, denom, value=-lr / bc1)


def orthogonalise(g, steps=5):
    """Newton-Schulz iteration towards the nearest semi-orthogonal matrix (as in Muon)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16() if g.is_cuda else g.float()
    x = x / (x.norm() + 1e-7)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return (x.T if tall else x).to(g.dtype)


class Muon:
    def __init__(self, params, lr):
        self.params, self.lr = list(params), lr
        self.bufs = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, lr_mult):
        for p, buf in zip(self.params, self.bufs):
            buf.mul_(MUON_MOMENTUM).add_(p.grad)
            u = orthogonalise(p.grad.add(buf, alpha=MUON_MOMENTUM))
            if WEIGHT_DECAY:
                p.mul_(1 - self.lr * lr_mult * WEIGHT_DECAY)
            p.add_(u, alpha=-self.lr * lr_mult * max(1.0, p.size(0) / p.size(1)) ** 0.5)


def lr_multiplier(step, fraction):
    if step < WARMUP_STEPS:
        return (step + 1) / WARMUP_STEPS
    if WARMDOWN_RATIO > 0 and fraction > 1 - WARMDOWN_RATIO:
        left = (1 - fraction) / WARMDOWN_RATIO
        return FINAL_LR_FRAC + (1 - FINAL_LR_FRAC) * left
    return 1.0


# --- run -----------------------------------------------------------------------------------------


def main():
    seed = int(os.environ.get("EVO_SEED", "0"))
    want = os.environ.get("EVO_DEVICE", "auto")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if want == "auto" else want
    threads = int(os.environ.get("EVO_THREADS", "0")) or 1
    torch.set_num_threads(threads)
    on_gpu = device.startswith("cuda")
    depth, width, batch = (GPU_DEPTH, GPU_WIDTH, GPU_BATCH_SIZE) if on_gpu else (DEPTH, WIDTH, BATCH_SIZE)
    seq_len = min(int(SEQ_LEN), MAX_SEQ_LEN)
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    try:
        budget = Budget(device)
        data = Data()
    except (DataError, ValueError) as e:
        fail(str(e))
    loader = Loader(data.train, int(batch), seq_len, seed, device)

    torch.manual_seed(seed)
    model = GPT(int(depth), int(width)).to(device)
    num_params = sum(p.numel() for p in model.parameters())
    matrices = [p for b in model.blocks for p in b.parameters()]
    optimizers = [AdamW([
        dict(params=[model.embed.weight], lr=EMBED_LR),
        dict(params=[model.head.weight], lr=HEAD_LR),
    ] + ([] if USE_MUON else [dict(params=matrices, lr=MATRIX_LR, wd=WEIGHT_DECAY)]))]
    if USE_MUON:
        optimizers.append(Muon(matrices, MUON_LR))
    params = list(model.parameters())
    forward = torch.compile(model) if (USE_COMPILE and on_gpu) else model
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if on_gpu else None

    def run_eval(progress_only):
        nonlocal eval_seconds
        t = time.time()
        model.eval()
        if autocast:
            with autocast():
                out = evaluate_bpb(forward, data.val, device, progress_only)
        else:
            out = evaluate_bpb(forward, data.val, device, progress_only)
        model.train()
        eval_seconds += time.time() - t
        return out

    print(f"device: {device} threads: {threads} params: {num_params / 1e6:.3f}M depth: {depth} "
          f"width: {model.width} batch: {batch}x{seq_len} seed: {seed} data: {data.meta['source']} "
          f"data_fingerprint: {data.fingerprint}", flush=True)

    eval_seconds = 0.0
    first_loss = None
    t_train = time.time()
    startup_seconds = t_train - T_START
    while not budget.done:
        t0 = budget.clock()
        x, y = loader.next()
        if autocast:
            with autocast():
                logits = forward(x)
        else:
            logits = forward(x)
        loss = F.cross_entropy(logits.float().view(-1, VOCAB_SIZE), y.reshape(-1))
        loss.backward()
        if GRAD_CLIP > 0:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
            torch._foreach_mul_([p.grad for p in params], (GRAD_CLIP / (norm + 1e-6)).clamp(max=1.0))
        mult = lr_multiplier(budget.steps, budget.fraction)
        for opt in optimizers:
            opt.step(mult)
        for p in params:
            p.grad = None
        loss_value = loss.item()  # synchronises on CUDA, so the step time below is real
        if not math.isfinite(loss_value):
            fail(f"loss is {loss_value} at step {budget.steps}")
        if first_loss is None:
            first_loss = loss_value
        elif loss_value > DIVERGENCE_FACTOR * first_loss:
            fail(f"diverged: loss {loss_value:.3f} at step {budget.steps} > "
                 f"{DIVERGENCE_FACTOR} x first loss {first_loss:.3f}")
        budget.step(budget.clock() - t0)
        for frac in budget.due_checkpoints():
            if frac < 1.0:
                print(progress_line(frac, run_eval(True)[1]), flush=True)
            else:
                val_bpb, progress_bpb = run_eval(False)
                print(progress_line(frac, progress_bpb), flush=True)

    if not math.isfinite(val_bpb):
        fail(f"val_bpb is {val_bpb}")
    total_seconds = time.time() - T_START
    steps = budget.steps
    tokens = steps * batch * seq_len
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_rss_mb = rss_kb / (1024 * 1024) if sys.platform == "darwin" else rss_kb / 1024
    lines = [
        ("val_bpb", f"{val_bpb:.6f}"),
        ("training_seconds", f"{budget.training_seconds:.1f}"),
        ("total_seconds", f"{total_seconds:.1f}"),
        ("startup_seconds", f"{startup_seconds:.2f}"),
        ("eval_seconds", f"{eval_seconds:.2f}"),
        ("warmup_seconds", f"{budget.warmup_seconds:.2f}"),
        ("budget_clock", budget.clock_name),
    ]
    if on_gpu:
        # flops per token: 6 per matrix weight (forward + backward) + attention scores
        attn_flops = 12 * depth * model.width * seq_len / 2
        flops = (6 * (num_params - model.embed.weight.numel()) + attn_flops) * tokens
        peak = 989e12  # H100 SXM dense bf16
        mfu = 100 * flops / max(budget.training_seconds + budget.warmup_seconds, 1e-9) / peak
        lines += [("peak_vram_mb", f"{torch.cuda.max_memory_allocated() / 1024 / 1024:.1f}"),
                  ("mfu_percent", f"{mfu:.2f}")]
    lines += [
        ("peak_rss_mb", f"{peak_rss_mb:.1f}"),
        ("total_tokens_M", f"{tokens / 1e6:.3f}"),
        ("tokens_per_sec", f"{tokens / max(budget.training_seconds + budget.warmup_seconds, 1e-9):.0f}"),
        ("num_steps", f"{steps}"),
        ("num_params_M", f"{num_params / 1e6:.3f}"),
        ("depth", f"{depth}"),
        ("seed", f"{seed}"),
        ("device", device),
        ("data_fingerprint", data.fingerprint),
    ]
    print("---")
    for key, value in lines:
        print(f"{key + ':':<18}{value}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
