#!/usr/bin/env python3
"""PyTorch + transformers baseline for the embedding benchmarks (not part of CI).

Measures in-process, eager fp32, the same workloads as `bench_http` and `bench_model`:
batch 1/8/32 x sequence 16/64/256, and the mixed workload (8-60 words per input, 32 inputs per
batch), on MiniLM (real weights, mean pooling + L2 normalisation, as sentence-transformers does)
and optionally on a BERT-base-shaped model with random weights. Prints markdown tables and
/proc/loadavg.

    python3 bench/torch_baseline.py [--model DIR] [--threads 2] [--seconds 5] [--base]

The model defaults to the folder `scripts/fetch-minilm.sh` prints.
"""

import argparse
import pathlib
import subprocess
import time

import torch
from transformers import AutoTokenizer, BertConfig, BertModel

WORDS = (
    "the cat sat on mat while people walked through city after rain and market was busy with fresh "
    "fruit from farms near river music played in old square children laughed at small dog running "
    "around tree under bright blue sky"
).split()


class XorShift:
    """Same word sequence generator as bench_http.rs, so the texts match."""

    def __init__(self, seed):
        self.s = seed

    def next(self):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFFFFFFFFFF
        s ^= s >> 7
        s ^= (s << 17) & 0xFFFFFFFFFFFFFFFF
        self.s = s
        return s

    def text(self, words):
        return " ".join(WORDS[self.next() % len(WORDS)] for _ in range(words))


def loadavg():
    try:
        return pathlib.Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "n/a"


def embed(model, tok, texts):
    batch = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1), int(batch["attention_mask"].sum())


def measure(model, tok, make, seconds):
    embed(model, tok, make())  # warm-up
    latencies, inputs, tokens = [], 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(latencies) < 3:
        texts = make()
        t = time.perf_counter()
        _, n = embed(model, tok, texts)
        latencies.append(time.perf_counter() - t)
        inputs += len(texts)
        tokens += n
    elapsed = time.perf_counter() - start
    latencies.sort()
    p = lambda q: latencies[round((len(latencies) - 1) * q)] * 1000
    return inputs / elapsed, tokens / elapsed, p(0.5), p(0.99), len(latencies)


def table(title, model, tok, seconds):
    print(f"\n### {title}\n")
    print("| workload | inputs/s | tokens/s | p50 ms | p99 ms | batches |\n|---|---|---|---|---|---|")
    rng = XorShift(0x9E3779B97F4A7C15 ^ 1)
    for batch in (1, 8, 32):
        for length in (16, 64, 256):
            row = measure(model, tok, lambda: [rng.text(length - 2) for _ in range(batch)], seconds)
            print(f"| {batch} x {length} tokens | {row[0]:.1f} | {row[1]:.0f} | {row[2]:.2f} | {row[3]:.2f} | {row[4]} |")

    def mixed():
        out = []
        for _ in range(32):
            words = 8 + rng.s % 53
            out.append(rng.text(words))
        return out

    row = measure(model, tok, mixed, seconds)
    print(f"| mixed 8-60 words x 32 | {row[0]:.1f} | {row[1]:.0f} | {row[2]:.2f} | {row[3]:.2f} | {row[4]} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="MiniLM folder (default: scripts/fetch-minilm.sh)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--base", action="store_true", help="also a BERT-base-shaped random model")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = args.model or subprocess.run(
        ["bash", str(pathlib.Path(__file__).resolve().parent.parent / "scripts/fetch-minilm.sh")],
        check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]

    print(f"torch {torch.__version__}, {args.threads} threads; load before: {loadavg()}")
    tok = AutoTokenizer.from_pretrained(model_dir)
    minilm = BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    table("PyTorch eager fp32: MiniLM", minilm, tok, args.seconds)
    if args.base:
        torch.manual_seed(0)
        base = BertModel(BertConfig(), add_pooling_layer=False).eval()
        table("PyTorch eager fp32: BERT-base shape, random weights", base, tok, args.seconds)
    print(f"\nload after: {loadavg()}")


if __name__ == "__main__":
    main()
