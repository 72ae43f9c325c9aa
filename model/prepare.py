"""The fixed part of the model target: data, tokenizer, data order, time budget, metric.

Candidates evolve train.py; this file is the harness they are measured against and
must not change between runs that are compared. It holds:

- the data: an offline default built from the Python standard library's own .py
  sources (present wherever Python is, no network), or tinyshakespeare downloaded
  with retries, a timeout and a sha256 check, cached under EVO_CACHE;
- the tokenizer: raw bytes, vocabulary 256;
- a data loader whose order depends only on the seed;
- the time budget (EVO_TIME_BUDGET seconds of training, warm-up steps excluded, on
  the clock EVO_CLOCK names: by default the process's CPU time on CPU, wall time on
  GPUs; or EVO_MAX_STEPS steps for step-deterministic runs) and the progress
  checkpoints;
- the metric: val_bpb, summed cross-entropy in nats / (ln 2 x bytes) on a fixed
  held-out subset, independent of the vocabulary.

`python model/prepare.py` builds the data once and prints its fingerprint.
Environment: EVO_DATA (stdlib | tinyshakespeare), EVO_DATA_URL (mirror or local
path/file:// URL for tinyshakespeare, still checksum-verified), EVO_CACHE (cache
directory, default ~/.cache/evo-model), EVO_TIME_BUDGET, EVO_CLOCK, EVO_MAX_STEPS.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import zlib

import numpy as np

# ---------------------------------------------------------------------------
# Fixed constants (changing any of them changes what val_bpb means)

VOCAB_SIZE = 256                 # byte-level tokenizer
MAX_SEQ_LEN = 256                # evaluation context; train.py may train on <= this
DEFAULT_TIME_BUDGET = 4.0        # seconds of training when EVO_TIME_BUDGET is unset
BUDGET_WARMUP_STEPS = 2          # first steps not counted against the budget
CLOCKS = ("auto", "cpu", "wall")  # EVO_CLOCK; auto = cpu time on CPU, wall time on GPUs
PROGRESS_FRACTIONS = tuple(round(0.1 * k, 1) for k in range(1, 11))  # 0.1 .. 1.0
EVAL_ROWS = 64                   # final eval: 64 windows x 256 bytes = 16 KiB of val
PROGRESS_EVAL_STRIDE = 8         # progress estimate: every 8th of those rows (2 KiB)
FORMAT_VERSION = 1               # bump when the on-disk layout or the split changes

STDLIB_BYTES = 8_000_000         # byte budget of the offline default corpus
STDLIB_VAL_MOD = 10              # a file goes to val when crc32(path) % 10 == 0
STDLIB_SKIP_DIRS = frozenset({
    "site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3",
    "__pycache__", "turtledemo", "ensurepip",
})

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"  # 1,115,394 bytes
SHAKESPEARE_VAL_FRACTION = 0.1   # last 10% of the text is held out

DATA_SOURCES = ("stdlib", "tinyshakespeare")


class DataError(RuntimeError):
    """Data could not be fetched, verified or loaded."""


class ChecksumError(DataError):
    """A downloaded file does not have the expected sha256."""


# ---------------------------------------------------------------------------
# Cache and download


def cache_dir() -> str:
    """EVO_CACHE if set, else ~/.cache/evo-model (created)."""
    path = os.environ.get("EVO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "evo-model")
    os.makedirs(path, exist_ok=True)
    return path


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _open_source(url: str, timeout: float):
    """A readable binary stream for an http(s)/file URL or a plain local path."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("http", "https", "ftp"):
        req = urllib.request.Request(url, headers={"User-Agent": "evo-model/1"})
        return urllib.request.urlopen(req, timeout=timeout)
    if parsed.scheme == "file":
        path = urllib.request.url2pathname(parsed.path)
    elif parsed.scheme == "" or len(parsed.scheme) == 1:  # plain path (or C:\ on Windows)
        path = url
    else:
        raise DataError(f"unsupported URL scheme {parsed.scheme!r} in {url!r}")
    return open(path, "rb")


def download(url: str, sha256: str, dest: str, retries: int = 3, timeout: float = 30.0,
             backoff: float = 1.0) -> str:
    """Fetch url into dest (atomically), verify its sha256, and return dest.

    A dest that already exists with the right checksum is reused without touching the
    source. Transient failures are retried `retries` times with a growing pause; a
    checksum mismatch is not retried and raises ChecksumError (nothing is left in dest).
    """
    if os.path.exists(dest) and sha256_file(dest) == sha256:
        return dest
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    last_err: Exception | None = None
    for attempt in range(1, retries + 1):
        fd, tmp = tempfile.mkstemp(prefix=".part-", dir=os.path.dirname(os.path.abspath(dest)))
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, _open_source(url, timeout) as src:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    h.update(chunk)
                    out.write(chunk)
            got = h.hexdigest()
            if got != sha256:
                raise ChecksumError(
                    f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}; "
                    f"the file was not cached (a wrong mirror or a corrupted download)")
            os.replace(tmp, dest)
            return dest
        except ChecksumError:
            raise
        except (OSError, ValueError) as e:  # URLError and timeouts are OSErrors
            last_err = e
            if attempt < retries:
                time.sleep(backoff * attempt)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise DataError(f"could not download {url} after {retries} attempts: {last_err}")


# ---------------------------------------------------------------------------
# Corpora


def stdlib_dir() -> str:
    return os.path.dirname(os.__file__)


def stdlib_files(root: str | None = None) -> list[str]:
    """Relative posix paths of the stdlib's .py files, sorted, test suites excluded."""
    root = root or stdlib_dir()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in STDLIB_SKIP_DIRS and not d.startswith(".")]
        rel = os.path.relpath(dirpath, root)
        for name in filenames:
            if name.endswith(".py"):
                out.append(name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}")
    return sorted(out)


def _build_stdlib(root: str | None = None) -> tuple[bytes, bytes, dict]:
    root = root or stdlib_dir()
    train, val, total, nfiles = [], [], 0, 0
    for rel in stdlib_files(root):
        if total >= STDLIB_BYTES:
            break
        with open(os.path.join(root, *rel.split("/")), "rb") as f:
            data = f.read(STDLIB_BYTES - total)
        total += len(data)
        nfiles += 1
        (val if zlib.crc32(rel.encode()) % STDLIB_VAL_MOD == 0 else train).append(data)
    meta = {"source": "stdlib", "root": root, "files": nfiles, "python": sys.version.split()[0]}
    return b"".join(train), b"".join(val), meta


def _build_shakespeare() -> tuple[bytes, bytes, dict]:
    url = os.environ.get("EVO_DATA_URL") or SHAKESPEARE_URL
    path = download(url, SHAKESPEARE_SHA256, os.path.join(cache_dir(), "downloads", "tinyshakespeare.txt"))
    with open(path, "rb") as f:
        data = f.read()
    n_val = int(len(data) * SHAKESPEARE_VAL_FRACTION)
    return data[:-n_val], data[-n_val:], {"source": "tinyshakespeare", "url": url}


def data_source() -> str:
    src = os.environ.get("EVO_DATA", "stdlib").strip() or "stdlib"
    if src not in DATA_SOURCES:
        raise DataError(f"EVO_DATA={src!r}: expected one of {', '.join(DATA_SOURCES)}")
    return src


def _cache_key(source: str) -> str:
    if source == "stdlib":
        ident = f"{FORMAT_VERSION}|{sys.version}|{stdlib_dir()}|{STDLIB_BYTES}|{STDLIB_VAL_MOD}"
    else:
        ident = f"{FORMAT_VERSION}|{SHAKESPEARE_SHA256}|{SHAKESPEARE_VAL_FRACTION}"
    return f"{source}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


def fingerprint(train: bytes | np.ndarray, val: bytes | np.ndarray) -> str:
    """Short sha256 over the train and val bytes: runs on different data must not be compared."""
    h = hashlib.sha256()
    for part in (train, val):
        b = memoryview(part).cast("B") if not isinstance(part, bytes) else part
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:16]


def prepare(source: str | None = None, verbose: bool = False) -> str:
    """Build the data for `source` once (cached, concurrency-safe) and return its directory."""
    source = source or data_source()
    final = os.path.join(cache_dir(), _cache_key(source))
    if os.path.exists(os.path.join(final, "meta.json")):
        return final
    t0 = time.time()
    train, val, meta = _build_stdlib() if source == "stdlib" else _build_shakespeare()
    if len(val) < MAX_SEQ_LEN + 1 or len(train) < MAX_SEQ_LEN + 1:
        raise DataError(f"{source}: too little data (train {len(train)} B, val {len(val)} B)")
    meta.update(train_bytes=len(train), val_bytes=len(val), fingerprint=fingerprint(train, val),
                format_version=FORMAT_VERSION)
    # Write into a private directory, then rename it into place: a concurrent builder
    # either wins the rename or finds the finished directory and discards its own.
    tmp = tempfile.mkdtemp(prefix=".build-", dir=cache_dir())
    try:
        os.chmod(tmp, 0o755)
        for name, data in (("train.bin", train), ("val.bin", val)):
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        try:
            os.rename(tmp, final)
        except OSError:
            if not os.path.exists(os.path.join(final, "meta.json")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        print(f"built {final} in {time.time() - t0:.2f}s")
    return final


class Data:
    """The prepared splits as uint8 arrays, plus the metadata and the fingerprint."""

    def __init__(self, source: str | None = None):
        self.dir = prepare(source)
        with open(os.path.join(self.dir, "meta.json")) as f:
            self.meta = json.load(f)
        self.train = np.fromfile(os.path.join(self.dir, "train.bin"), dtype=np.uint8)
        self.val = np.fromfile(os.path.join(self.dir, "val.bin"), dtype=np.uint8)
        self.fingerprint = fingerprint(self.train, self.val)
        if self.fingerprint != self.meta["fingerprint"]:
            raise DataError(f"cached data in {self.dir} is corrupt (fingerprint "
                            f"{self.fingerprint} != {self.meta['fingerprint']}); delete it and rerun")


# ---------------------------------------------------------------------------
# Tokenizer (bytes)


def encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def decode(ids) -> str:
    return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------
# Data order


class Loader:
    """Random training windows; the order depends only on `seed` (and batch/seq sizes).

    next() returns (x, y) int64 tensors of shape (batch_size, seq_len), y shifted by one.
    """

    def __init__(self, data: np.ndarray, batch_size: int, seq_len: int, seed: int, device="cpu"):
        import torch
        if seq_len > MAX_SEQ_LEN:
            raise ValueError(f"seq_len {seq_len} > MAX_SEQ_LEN {MAX_SEQ_LEN}")
        self.torch = torch
        self.data = torch.from_numpy(data)
        self.batch_size, self.seq_len, self.device = batch_size, seq_len, device
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.offsets = torch.arange(seq_len + 1)

    def next(self):
        torch = self.torch
        starts = self.rng.integers(0, len(self.data) - self.seq_len - 1, size=self.batch_size)
        idx = torch.from_numpy(starts).unsqueeze(1) + self.offsets
        chunk = self.data[idx].long()
        x, y = chunk[:, :-1], chunk[:, 1:]
        if self.device != "cpu":
            x = x.pin_memory().to(self.device, non_blocking=True)
            y = y.pin_memory().to(self.device, non_blocking=True)
        return x, y


# ---------------------------------------------------------------------------
# Time budget and progress checkpoints


def time_budget() -> float:
    raw = os.environ.get("EVO_TIME_BUDGET", "")
    try:
        budget = float(raw) if raw.strip() else DEFAULT_TIME_BUDGET
    except ValueError:
        raise ValueError(f"EVO_TIME_BUDGET={raw!r} is not a number of seconds") from None
    if not budget > 0:
        raise ValueError(f"EVO_TIME_BUDGET={raw!r} must be positive")
    return budget


def max_steps() -> int | None:
    raw = os.environ.get("EVO_MAX_STEPS", "").strip()
    if not raw:
        return None
    n = int(raw)
    if n <= 0:
        raise ValueError(f"EVO_MAX_STEPS={raw!r} must be a positive integer")
    return n


def clock_name(device: str = "cpu") -> str:
    """EVO_CLOCK: `cpu` (the process's CPU time), `wall`, or `auto` (cpu on CPU, wall on GPUs)."""
    name = os.environ.get("EVO_CLOCK", "").strip() or "auto"
    if name not in CLOCKS:
        raise ValueError(f"EVO_CLOCK={name!r}: expected one of {', '.join(CLOCKS)}")
    if name == "auto":
        name = "cpu" if str(device).startswith("cpu") else "wall"
    return name


class Budget:
    """Tracks training time (warm-up steps excluded) or steps, and the progress checkpoints.

    Time each optimizer step with `budget.clock()` (wall time, or the process's CPU
    time under EVO_CLOCK=cpu) and pass it to step(seconds). `fraction`
    is the share of the budget used (time, or steps under EVO_MAX_STEPS), `done` says
    when to stop, and due_checkpoints() returns the PROGRESS_FRACTIONS newly crossed
    (the last, 1.0, only once training is done).
    """

    def __init__(self, device: str = "cpu"):
        self.seconds = time_budget()
        self.clock_name = clock_name(device)
        self.clock = time.process_time if self.clock_name == "cpu" else time.perf_counter
        self.max_steps = max_steps()
        self.steps = 0
        self.training_seconds = 0.0     # counted time (after warm-up)
        self.warmup_seconds = 0.0       # time of the excluded warm-up steps
        self._next = 0

    def step(self, seconds: float) -> None:
        self.steps += 1
        if self.steps <= BUDGET_WARMUP_STEPS:
            self.warmup_seconds += seconds
        else:
            self.training_seconds += seconds

    @property
    def fraction(self) -> float:
        if self.max_steps is not None:
            return min(1.0, self.steps / self.max_steps)
        return min(1.0, self.training_seconds / self.seconds)

    @property
    def done(self) -> bool:
        if self.max_steps is not None:
            return self.steps >= self.max_steps
        return self.training_seconds >= self.seconds

    def due_checkpoints(self) -> list[float]:
        out = []
        frac, done = self.fraction, self.done
        while self._next < len(PROGRESS_FRACTIONS):
            f = PROGRESS_FRACTIONS[self._next]
            if f >= 1.0 and not done or f < 1.0 and frac < f:
                break
            out.append(f)
            self._next += 1
        return out


def progress_line(fraction: float, bpb: float) -> str:
    """The line evo's progress regex reads: `progress: 0.250 val_bpb: 2.345678`."""
    return f"progress: {fraction:.3f} val_bpb: {bpb:.6f}"


# ---------------------------------------------------------------------------
# Metric


def eval_starts(val: np.ndarray, rows: int = EVAL_ROWS, seq_len: int = MAX_SEQ_LEN) -> np.ndarray:
    """Window starts spread evenly over the whole val split (fixed)."""
    last = len(val) - seq_len - 1
    rows = min(rows, last + 1)
    return np.array([i * last // max(1, rows - 1) for i in range(rows)], dtype=np.int64)


def eval_nats(model, val: np.ndarray, starts: np.ndarray, device="cpu", batch_size: int = 32):
    """Summed cross-entropy (nats) of each window's MAX_SEQ_LEN next-byte predictions.

    `model(x)` must map int64 (B, T) to logits (B, T, VOCAB_SIZE). The loss is
    computed here in float32; callers may wrap this in autocast.
    """
    import torch
    import torch.nn.functional as F
    data = torch.from_numpy(val)
    offsets = torch.arange(MAX_SEQ_LEN + 1)
    out = []
    with torch.no_grad():
        for i in range(0, len(starts), batch_size):
            idx = torch.from_numpy(starts[i:i + batch_size]).unsqueeze(1) + offsets
            chunk = data[idx].long().to(device)
            x, y = chunk[:, :-1], chunk[:, 1:]
            logits = model(x).float()
            nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none")
            out.append(nll.view(y.shape).sum(1).double().cpu())
    return torch.cat(out).numpy()


def bpb(nats: np.ndarray, seq_len: int = MAX_SEQ_LEN) -> float:
    """Bits per byte: summed nats / (ln 2 x predicted bytes). Each target token is one byte."""
    return float(np.sum(nats) / (math.log(2) * len(nats) * seq_len))


def evaluate_bpb(model, val: np.ndarray, device="cpu", progress_only: bool = False) -> tuple[float, float]:
    """(val_bpb on the fixed EVAL_ROWS windows, progress estimate on every PROGRESS_EVAL_STRIDE-th).

    With progress_only=True only the progress windows are evaluated and the first
    value is NaN.
    """
    starts = eval_starts(val)
    if progress_only:
        return float("nan"), bpb(eval_nats(model, val, starts[::PROGRESS_EVAL_STRIDE], device))
    nats = eval_nats(model, val, starts, device)
    return bpb(nats), bpb(nats[::PROGRESS_EVAL_STRIDE])


# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(description="Build the evo model data once and print its fingerprint.")
    p.add_argument("--data", choices=DATA_SOURCES, default=None, help="default: EVO_DATA or stdlib")
    args = p.parse_args(argv)
    try:
        d = Data(args.data)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    m = d.meta
    print(f"data:             {m['source']}")
    print(f"cache_dir:        {d.dir}")
    print(f"train_bytes:      {m['train_bytes']}")
    print(f"val_bytes:        {m['val_bytes']}")
    print(f"data_fingerprint: {d.fingerprint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
