#!/usr/bin/env python3
"""Side-by-side benchmark: nlu-server against ONNX Runtime and PyTorch, same weights, same threads,
same machine, one run. Not part of CI.

Model only (no tokenizer, no HTTP), for each model folder of `bench/make_models.py` (MiniLM with
real weights, BERT-base and BERT-large shapes with random weights) and each batch x sequence shape:
  - ours: `target/release/bench_model --model DIR --shapes BxS --json` (f32; `--dtype int8` and
    `--dtype bf16` where they run natively, see below),
  - ONNX Runtime: model.onnx, intra-op threads = --threads, inter-op 1, all graph optimisations,
  - PyTorch eager fp32 and PyTorch bf16 autocast (transformers' BertModel), when torch imports.
The ids are the synthetic ones bench_model uses (all tokens real, no padding). Ours also pools
and normalises (negligible next to the encoder); the peers stop at last_hidden_state.

Modes the CPU cannot run natively are skipped, each with a note saying why (`skipped_modes`):
PyTorch bf16 (model only and in-process) needs avx512_bf16 or amx_bf16 (elsewhere autocast is
emulated and only costs minutes); ours bf16 needs amx_bf16 (elsewhere the server runs f32, a
duplicate of ours f32); ours int8 needs avx2 + fma and a bench_model / bench_http whose --help
offers int8. The CPU model and its flags (CPU_FLAGS) are in the notes of every run.

Rerank (issue 22), bert-base-reranker: a query of 8 words and 32 passages of 16-256 characters per
request, through HTTP (`bench_http --workloads rerank`, `/v1/rerank`, 1 and --clients clients)
next to PyTorch in-process (`BertForSequenceClassification`: tokenizer on the 32 pairs, padded
batch, logits, sigmoid) on the same generator's pairs. Figures in pairs/s.

End to end, MiniLM, the workload of issue 9's target: texts of 16-256 characters, 32 per request,
through HTTP (`target/release/bench_http --workloads mixed-chars --json`, 1 and --clients clients)
next to PyTorch (and ONNX Runtime) in-process on texts from the same generator (tokenizer +
encoder + mean pooling + L2 normalisation, one batch of 32 after the other).

Every figure is taken only when the 1-minute load average is at most --max-load (waiting up to
--settle seconds for it, since the previous figure loads the machine too); otherwise the script
exits non-zero without a report, unless --force. The load before and after every figure is
printed with it. Each figure's summary goes to stderr as soon as it is taken, and --json-out is
rewritten after every figure (notes + figures so far, "finished": false until the end), so a run
killed halfway keeps what it measured.

    python3 bench/make_models.py
    cargo build --release -p nlu-bench   # bench_model, bench_http, fma_peak
    python3 bench/side_by_side.py [--threads 2] [--seconds 3] [--models minilm,bert-base,bert-large]
        [--shapes 1x16,1x128,8x128,32x128] [--large-shapes 1x16,8x128] [--max-load 0.75] [--force]
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
# CPU features that decide which kernels and peer modes can run natively, recorded with each run.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")

WORDS = (
    "the cat sat on mat while people walked through city after rain and market was busy with fresh "
    "fruit from farms near river music played in old square children laughed at small dog running "
    "around tree under bright blue sky"
).split()


# ---------------------------------------------------------------------------------------------
# Inputs: the same ids as bench_model, the same texts as bench_http.

def synthetic_ids(batch, seq):
    """bench_model's ids: [CLS], word pieces 2000-6999, [SEP]; no padding."""
    rows = [[101] + [2000 + (i * 31 + b * 7) % 5000 for i in range(seq - 2)] + [102] for b in range(batch)]
    ids = np.array(rows, dtype=np.int64)
    return ids, np.ones_like(ids)


class Texts:
    """bench_http's xorshift64 text generator (client 0's seed), so both sides see the same texts."""

    MASK = (1 << 64) - 1

    def __init__(self, seed=0x9E3779B97F4A7C15 ^ 1):
        self.s = seed

    def next(self):
        s = self.s
        s ^= (s << 13) & self.MASK
        s ^= s >> 7
        s ^= (s << 17) & self.MASK
        self.s = s
        return s

    def word(self):
        return WORDS[self.next() % len(WORDS)]

    def chars(self):
        """A text of 16-256 characters: words until that length, cut there."""
        n = 16 + self.next() % 241
        out = ""
        while len(out) < n:
            out = f"{out} {self.word()}" if out else self.word()
        return out[:n]

    def request(self):
        return [self.chars() for _ in range(32)]

    def rerank_request(self):
        """bench_http's rerank request: a query of 8 words, then 32 passages."""
        query = " ".join(self.word() for _ in range(8))
        return query, self.request()


# ---------------------------------------------------------------------------------------------
# Machine load: every figure is gated on it and reported with it.

def loadavg():
    """The 1-minute load average and the whole /proc/loadavg line."""
    line = pathlib.Path("/proc/loadavg").read_text().strip()
    return float(line.split()[0]), line


def wait_for_quiet(args, what):
    """Returns the load line once the 1-minute load is at most --max-load; exits without a report
    when it stays above for --settle seconds (unless --force)."""
    deadline = time.monotonic() + args.settle
    one, line = loadavg()
    while one > args.max_load and time.monotonic() < deadline:
        time.sleep(2)
        one, line = loadavg()
    if one > args.max_load:
        if not args.force:
            sys.exit(
                f"refusing to measure {what}: 1-minute load {one} > --max-load {args.max_load} "
                f"after waiting {args.settle:.0f} s ({line}); the machine is busy. "
                "Retry later, or pass --force to report anyway."
            )
        print(f"warning: measuring {what} at load {one} (--force)", file=sys.stderr)
    return line


def add_gate_args(ap):
    """The flags of the load gate (`wait_for_quiet`) and of the report (`Report`)."""
    ap.add_argument("--max-load", type=float, default=0.75,
                    help="highest 1-minute load average at which a figure is taken (default 0.75)")
    ap.add_argument("--settle", type=float, default=300.0,
                    help="seconds to wait for the load to fall below --max-load before refusing (default 300)")
    ap.add_argument("--force", action="store_true", help="measure and report even on a busy machine")
    ap.add_argument("--json-out", type=pathlib.Path, help="also write every figure to this JSON file")


class Report:
    """The notes and every figure taken so far. Each figure's summary goes to stderr as it is
    added, and --json-out (if given) is rewritten after it, so a run killed halfway keeps what it
    measured."""

    def __init__(self, path, notes, line=None):
        self.path, self.notes, self.figures = path, notes, []
        self.line = line or one_line  # a figure's summary
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        self.save()

    def add(self, row):
        self.figures.append(row)
        print(f"  {self.line(row)}", file=sys.stderr)
        self.save()

    def note(self, text):
        self.notes.append(text)
        print(f"note: {text}", file=sys.stderr)
        self.save()

    def save(self, finished=False):
        if self.path:
            tmp = self.path.with_name(self.path.name + ".tmp")  # never a half-written file
            tmp.write_text(json.dumps({"notes": self.notes, "figures": self.figures, "finished": finished}, indent=1))
            tmp.replace(self.path)


def loads(line):
    """The 1-, 5- and 15-minute load averages of a /proc/loadavg line."""
    return " ".join(line.split()[:3])


def one_line(row):
    return (f"{row['what']}: {row['tokens_per_s']:,.0f} tokens/s, {row['inputs_per_s']:.1f} inputs/s, "
            f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, {row['runs']} runs, "
            f"load {loads(row['load_before'])} -> {loads(row['load_after'])}")


def figure(args, report, what, run):
    """Takes one figure: waits for a quiet machine, runs `run()` (a dict of results, or one with
    only `skipped`: why), records the load around it."""
    before = wait_for_quiet(args, what)
    print(f"measuring {what} (load {before.split()[0]})", file=sys.stderr)
    row = run()
    if "skipped" in row:
        report.note(f"{what}: skipped ({row['skipped']})")
        return None
    row.update(what=what, load_before=before, load_after=loadavg()[1])
    report.add(row)
    return row


def figure_list(args, report, what, run):
    """Like `figure`, for a run that yields several rows (bench_http: 1 and N clients)."""
    before = wait_for_quiet(args, what)
    print(f"measuring {what} (load {before.split()[0]})", file=sys.stderr)
    rows = run()
    after = loadavg()[1]
    for row in rows:
        row.update(what=f"{what}, {row['clients']} client(s)", load_before=before, load_after=after,
                   runs=row["requests"])
        report.add(row)
    return rows


def timed(fn, seconds):
    """Two warm-up calls (oneDNN builds its kernels on the first bf16 call of a shape), then calls
    until `seconds` pass (at least 3). `fn` returns the tokens it ran. Returns the sorted
    latencies (s) and the tokens of the timed calls."""
    fn()
    fn()
    times, tokens, start = [], 0, time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        tokens += fn()
        times.append(time.perf_counter() - t)
    return sorted(times), tokens


def percentile_ms(times, q):
    """The q-quantile of sorted latencies (s), in ms."""
    return times[round((len(times) - 1) * q)] * 1e3


def summary(times, inputs_per_call, tokens):
    total = sum(times)
    return dict(inputs_per_s=inputs_per_call * len(times) / total, tokens_per_s=tokens / total,
                p50_ms=percentile_ms(times, 0.5), p99_ms=percentile_ms(times, 0.99), runs=len(times))


# ---------------------------------------------------------------------------------------------
# Engines.

def env(args):
    return dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))


def help_text(binary):
    return subprocess.run([binary, "--help"], capture_output=True, text=True).stdout


def mentions(text, word):
    """Whether `word` is in `text` as a word of its own (`int8` in a --help, not `uint8`)."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


# What each of our dtypes needs of the CPU to run natively, and what happens without it.
OURS_NEEDS = {
    "bf16": ({"amx_bf16"}, "no amx_bf16: ours would run f32, a duplicate of ours f32"),
    "int8": ({"avx2", "fma"}, "no avx2 + fma, which our int8 kernels need"),
}


def skipped_modes(flags, model_help, http_help):
    """Mode -> why it is skipped, for the modes this CPU (`flags`: the CPU_FLAGS it has) cannot run
    natively or the binaries (their --help texts) do not offer. Modes: "PyTorch bf16" (model only
    and in-process), "ours bf16", "ours bf16 via HTTP", "ours int8", "ours int8 via HTTP"."""
    have = set(flags)
    skip = {}
    if not have & {"avx512_bf16", "amx_bf16"}:
        skip["PyTorch bf16"] = "no avx512_bf16 or amx_bf16: autocast would be emulated"
    for dtype, (needs, why) in OURS_NEEDS.items():
        for mode, binary, text in ((f"ours {dtype}", "bench_model", model_help),
                                   (f"ours {dtype} via HTTP", "bench_http", http_help)):
            if not mentions(text, dtype):
                skip[mode] = f"{binary} --help offers no {dtype}"
            elif not needs <= have:
                skip[mode] = why
    return skip


def ours(args, folder, batch, seq, dtype=None):
    cmd = [str(args.bin / "bench_model"), "--model", str(folder), "--skip-base", "--skip-uninlu",
           "--shapes", f"{batch}x{seq}", "--seconds", str(args.seconds), "--json"]
    if dtype:
        cmd += ["--dtype", dtype]
    out = subprocess.run(cmd, env=env(args), check=True, capture_output=True, text=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    if dtype and row["dtype"] != dtype:  # bench_model fell back: not a figure of that dtype
        return {"skipped": f"bench_model ran {row['dtype']} instead"}
    return {k: row[k] for k in ("inputs_per_s", "tokens_per_s", "p50_ms", "p99_ms", "runs")}


def ort_session(args, folder):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])


def ort_forward(session):
    return lambda ids, mask: session.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def torch_forward(model, bf16):
    import torch

    def forward(ids, mask):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.float().numpy()

    return forward


def model_only(args, forward, batch, seq):
    ids, mask = synthetic_ids(batch, seq)

    def step():
        forward(ids, mask)
        return batch * seq

    times, tokens = timed(step, args.seconds)
    return summary(times, batch, tokens)


def in_process_texts(args, tokenizer, forward):
    """Tokenizer + encoder + mean pooling + L2 normalisation, batches of 32 mixed texts."""
    texts = Texts()

    def step():
        batch = tokenizer(texts.request(), padding=True, truncation=True, max_length=256, return_tensors="np")
        ids, mask = batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)
        hidden = forward(ids, mask)
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
        return int(mask.sum())

    times, tokens = timed(step, args.http_seconds)
    return summary(times, 32, tokens)


def in_process_pairs(args, tokenizer, model):
    """Tokenizer + cross-encoder + sigmoid on a query and its 32 passages (what /v1/rerank runs)."""
    import torch

    texts = Texts()

    def step():
        query, passages = texts.rerank_request()
        batch = tokenizer([query] * len(passages), passages, padding=True, truncation=True, max_length=512,
                          return_tensors="pt")
        with torch.inference_mode():
            model(**batch).logits.sigmoid()
        return int(batch["attention_mask"].sum())

    times, tokens = timed(step, args.http_seconds)
    return summary(times, 32, tokens)


def ours_http(args, folder, dtype, workload="mixed-chars"):
    cmd = [str(args.bin / "bench_http"), "--model", str(folder), "--workloads", workload,
           "--clients", str(args.clients), "--seconds", str(args.http_seconds), "--dtype", dtype, "--json"]
    out = subprocess.run(cmd, env=env(args), check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


# ---------------------------------------------------------------------------------------------
# Work per token, for the fraction of peak.

def flops_per_token(config, seq):
    """2 x weights of the linear layers + attention (QK^T and PV: 4 x seq x hidden), per layer."""
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    return layers * (2 * (4 * h * h + 2 * h * i) + 4 * seq * h)


# ---------------------------------------------------------------------------------------------
# Report.

def fmt(row):
    return "skipped" if row is None else f"{row['tokens_per_s']:,.0f} ({row['p50_ms']:.1f} ms)"


def ratio(a, b):
    return "" if a is None or b is None else f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}"


def model_table(peak, grid):
    """One row per (model, batch, seq) of `grid` (engine -> figure, None or absent: skipped);
    `peak` is this machine's f32 FMA peak in FLOP/s."""
    head = ["model", "batch x seq", "ours f32", "ours int8", "ORT", "PyTorch fp32", "PyTorch bf16", "ours bf16",
            "ours/ORT", "ours/PyTorch fp32", "ours int8/f32", "ours bf16/PyTorch bf16", "ours % of fp32 peak"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (model, batch, seq), rows in grid.items():
        config = rows["config"]
        o, oi, x, t, tb, ob = (rows.get(k) for k in ("ours", "ours-int8", "ort", "torch", "torch-bf16", "ours-bf16"))
        frac = "" if o is None else f"{100 * o['tokens_per_s'] * flops_per_token(config, seq) / peak:.0f} %"
        cells = [model, f"{batch} x {seq}", fmt(o), fmt(oi), fmt(x), fmt(t), fmt(tb), fmt(ob),
                 ratio(o, x), ratio(o, t), ratio(oi, o), ratio(ob, tb), frac]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def relative_table(rows, unit):
    """(label, figure) rows with their rate relative to the PyTorch fp32 row."""
    base = next((r for label, r in rows if label.startswith("PyTorch fp32")), None)
    lines = [f"| engine | {unit} | p50 ms per request | vs PyTorch fp32 in-process |", "|---|---:|---:|---:|"]
    for label, r in rows:
        rel = "" if base is None else f"{r['inputs_per_s'] / base['inputs_per_s']:.2f}"
        lines.append(f"| {label} | {r['inputs_per_s']:.1f} | {r['p50_ms']:.1f} | {rel} |")
    return "\n".join(lines)


def figures_table(results):
    lines = ["| figure | inputs/s | tokens/s | p50 ms | p99 ms | runs | loadavg before | loadavg after |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for r in results:
        lines.append(f"| {r['what']} | {r['inputs_per_s']:.1f} | {r['tokens_per_s']:,.0f} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['runs']} | {loads(r['load_before'])} | {loads(r['load_after'])} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------

def missing_models(args):
    """The model folders this run reads that bench/make_models.py has not finished: checked
    before the first figure, not when the run reaches them minutes later."""
    names = [n for n in args.models.split(",") if n]
    names += [] if args.skip_http else ["minilm"]
    names += [] if args.skip_rerank else ["bert-base-reranker"]
    return [str(args.cache / n) for n in dict.fromkeys(names) if not (args.cache / n / ".complete").is_file()]


def cpu_flags():
    """The CPU_FLAGS this CPU has."""
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [f for f in CPU_FLAGS if f in have]
    return []


def fma_peak(args):
    """This machine's f32 FMA peak in FLOP/s at --threads threads, measured by `fma_peak` on a
    quiet machine (the "% of fp32 peak" column divides by it)."""
    wait_for_quiet(args, "the FMA peak")
    cmd = [str(args.bin / "fma_peak"), "--threads", str(args.threads), "--json"]
    row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return row["gflops"] * 1e9, row["isa"]


def cpu_line():
    """`CPU: <model> (<flags of CPU_FLAGS it has>)`, the CPU kind a run's figures hold for."""
    flags = cpu_flags()
    return f"CPU: {cpu_model()} ({' '.join(flags) or 'none of ' + ' '.join(CPU_FLAGS)})"


def cpu_model():
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def source_version():
    """The commit the binaries were presumably built from; `-dirty` when the tree had edits."""
    out = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def versions(torch_ok):
    import onnxruntime
    import transformers

    found = [f"onnxruntime {onnxruntime.__version__}", f"transformers {transformers.__version__}"]
    if torch_ok:
        import torch

        found.append(f"torch {torch.__version__}")
    return ", ".join(found)


def parse_shapes(text):
    return [tuple(int(n) for n in s.split("x")) for s in text.split(",")]


def run_models(args, report, torch_ok, skip):
    grid = {}
    for name in filter(None, args.models.split(",")):
        folder = args.cache / name
        config = json.loads((folder / "config.json").read_text())
        session = ort_session(args, folder)
        if torch_ok:
            from transformers import BertModel
            model = BertModel.from_pretrained(folder, add_pooling_layer=False).eval()
        shapes = args.large_shapes if name == "bert-large" else args.shapes
        for batch, seq in shapes:
            rows = grid.setdefault((name, batch, seq), {"config": config})
            what = lambda engine: f"{name} {batch}x{seq} {engine}"
            rows["ours"] = figure(args, report, what("ours f32"), lambda: ours(args, folder, batch, seq))
            if "ours int8" not in skip:
                rows["ours-int8"] = figure(args, report, what("ours int8"),
                                           lambda: ours(args, folder, batch, seq, "int8"))
            rows["ort"] = figure(args, report, what("ORT"), lambda: model_only(args, ort_forward(session), batch, seq))
            if torch_ok:
                rows["torch"] = figure(args, report, what("PyTorch fp32"),
                                       lambda: model_only(args, torch_forward(model, False), batch, seq))
                if "PyTorch bf16" not in skip:
                    rows["torch-bf16"] = figure(args, report, what("PyTorch bf16"),
                                                lambda: model_only(args, torch_forward(model, True), batch, seq))
            if "ours bf16" not in skip:
                rows["ours-bf16"] = figure(args, report, what("ours bf16"),
                                           lambda: ours(args, folder, batch, seq, "bf16"))
    return grid


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--cache", type=pathlib.Path, default=REPO / "target/bench-models",
                    help="folder of bench/make_models.py (default: target/bench-models)")
    ap.add_argument("--bin", type=pathlib.Path, default=REPO / "target/release",
                    help="folder with bench_model and bench_http (default: target/release)")
    ap.add_argument("--models", default="minilm,bert-base,bert-large",
                    help="models of the model-only figures, comma-separated; empty for none")
    ap.add_argument("--shapes", type=parse_shapes, default=parse_shapes("1x16,1x128,8x128,32x128"),
                    help="BATCHxSEQ list for MiniLM and BERT-base (default: 1x16,1x128,8x128,32x128)")
    ap.add_argument("--large-shapes", type=parse_shapes, default=parse_shapes("1x16,8x128"),
                    help="BATCHxSEQ list for BERT-large (default: 1x16,8x128; 32x128 takes minutes per figure)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of every engine (default: all cores)")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per model-only figure (after a warm-up run)")
    ap.add_argument("--http-seconds", type=float, default=10.0, help="seconds per end-to-end figure")
    ap.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients of the end-to-end figure")
    ap.add_argument("--skip-http", action="store_true", help="no end-to-end MiniLM figures")
    ap.add_argument("--skip-rerank", action="store_true", help="no rerank figures")
    add_gate_args(ap)
    args = ap.parse_args()

    for binary in ("bench_model", "bench_http", "fma_peak"):
        if not (args.bin / binary).is_file():
            sys.exit(f"{args.bin / binary} missing: cargo build --release -p nlu-bench")
    missing = missing_models(args)
    if missing:
        sys.exit(f"{', '.join(missing)} missing: run bench/make_models.py first")
    try:
        import torch
        import transformers

        transformers.logging.set_verbosity_error()  # MiniLM's unused pooler weights are expected
        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(1)
        torch_ok = True
    except ImportError as e:
        torch_ok = False
        print(f"note: PyTorch skipped ({e})", file=sys.stderr)
    flags = cpu_flags()
    skip = skipped_modes(flags, help_text(str(args.bin / "bench_model")), help_text(str(args.bin / "bench_http")))
    peak, isa = fma_peak(args)
    notes = [f"threads: {args.threads}; max load {args.max_load}; {args.seconds} s per model-only figure; "
             f"fp32 peak measured: {peak / 1e9:.0f} GFLOP/s ({isa} FMA, fma_peak)",
             f"{cpu_line()}; "
             f"{versions(torch_ok)}; source {source_version()} (binaries: {args.bin})"]
    notes += [f"{mode}: skipped ({why})" for mode, why in skip.items()]
    if not torch_ok:
        notes.append("PyTorch: skipped (not importable)")

    report = Report(args.json_out, notes)
    grid = run_models(args, report, torch_ok, skip)

    e2e = []
    if not args.skip_http:
        folder = args.cache / "minilm"
        for dtype in [d for d in ("f32", "int8", "bf16") if f"ours {d} via HTTP" not in skip]:
            what = f"minilm mixed 16-256 chars x 32, HTTP ours {dtype}"
            for row in figure_list(args, report, what, lambda: ours_http(args, folder, dtype)):
                e2e.append((f"ours {dtype} via HTTP, {row['clients']} client(s)", row))
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(folder)
        session = ort_session(args, folder)
        peers = [("ONNX Runtime in-process", ort_forward(session))]
        if torch_ok:
            from transformers import BertModel
            model = BertModel.from_pretrained(folder, add_pooling_layer=False).eval()
            torch_peers = [("PyTorch fp32 in-process", torch_forward(model, False))]
            if "PyTorch bf16" not in skip:
                torch_peers.append(("PyTorch bf16 in-process", torch_forward(model, True)))
            peers = torch_peers + peers
        for label, forward in peers:
            row = figure(args, report, f"minilm mixed 16-256 chars x 32, {label}",
                         lambda: in_process_texts(args, tokenizer, forward))
            e2e.append((label, row))

    rerank = []
    if not args.skip_rerank:
        folder = args.cache / "bert-base-reranker"
        what = "bert-base-reranker, query + 32 passages of 16-256 chars"
        for row in figure_list(args, report, f"{what}, HTTP ours f32", lambda: ours_http(args, folder, "f32", "rerank")):
            rerank.append((f"ours f32 via HTTP (/v1/rerank), {row['clients']} client(s)", row))
        if torch_ok:
            from transformers import AutoTokenizer, BertForSequenceClassification
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = BertForSequenceClassification.from_pretrained(folder).eval()
            row = figure(args, report, f"{what}, PyTorch fp32 in-process",
                         lambda: in_process_pairs(args, tokenizer, model))
            rerank.append(("PyTorch fp32 in-process", row))

    print("\n".join(f"- {n}" for n in report.notes))
    print(f"\n### Model only (tokens/s, p50 latency)\n\n{model_table(peak, grid)}")
    if e2e:
        print("\n### End to end, MiniLM, 16-256 character texts, 32 per request\n")
        print(relative_table(e2e, "inputs/s"))
    if rerank:
        print("\n### Rerank, BERT-base cross-encoder, a query and 32 passages of 16-256 characters per request\n")
        print(relative_table(rerank, "pairs/s"))
    print(f"\n### Every figure with the load around it\n\n{figures_table(report.figures)}")
    report.save(finished=True)


if __name__ == "__main__":
    main()
