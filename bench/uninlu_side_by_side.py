#!/usr/bin/env python3
"""UniNLU side by side: nlu-server against the original deployment (ModelScope's pipeline behind
Flask and Gunicorn, `bench/uninlu_original.py`), same weights, same machine, one run, through
HTTP. Not part of CI.

The model is `uninlu-base` of `bench/make_models.py` (the base-sized model, random weights, heads
set so that the relation example finds one person). The requests are the model card's examples:
  - NER, 3 types: `{"人物", "地理位置", "组织机构"}` on the card's 56-character sentence (3 prompts);
  - relations: `{"人物": {4 relations}}` on the card's Winter Olympics sentence (1 + 4 prompts).
Each runs with 1 client and with --clients clients (closed loop: each client sends its next
request when the last one is answered) for --seconds, against:
  - the original: `gunicorn -w --workers` sync workers (the seed guide runs two), each with its
    own pipeline; once with PyTorch's default threads (all cores per worker, so two workers
    oversubscribe the cores under load) and once with one thread per worker (--original-threads);
    ours is compared with the better of the two in each row;
  - ours: `nlu-server serve --task uninlu` with RAYON_NUM_THREADS=--threads, for each --dtypes.
Before the timed requests each server answers every example once, and the answers are compared
with the first original's (they must be the same spans for f32; int8's differences are listed).
--isa avx2 caps both sides to AVX2 + FMA on a CPU with AVX-512: a stand-in for an AVX2-only CPU
(same cores and caches, so not the same figures as a real one).

Every figure waits for the 1-minute load to fall to --max-load (as bench/side_by_side.py does)
and records the load around it; --json-out is rewritten after every figure.

    python3 bench/make_models.py --models uninlu-base
    cargo build --release -p nlu-server
    python3 bench/uninlu_side_by_side.py [--threads 2] [--seconds 20] [--clients 8] [--dtypes f32,int8]
"""

import argparse
import http.client
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time

from side_by_side import REPO, Report, add_gate_args, cpu_line, figure, loads, percentile_ms, source_version

EXAMPLES = {
    "NER, 3 types": (
        "1944年毕业于北大的名古屋铁道会长谷口清太郎等人在日本积极筹资，共筹款2.7亿日元，参加捐款的日本企业有69家。",
        {"人物": None, "地理位置": None, "组织机构": None},
    ),
    "relations, 1 person x 4": (
        "在北京冬奥会自由式中，2月8日上午，滑雪女子大跳台决赛中中国选手谷爱凌以188.25分获得金牌。",
        {"人物": {"比赛项目(赛事名称)": None, "参赛地点(城市)": None, "获奖时间(时间)": None, "选手国籍(国籍)": None}},
    ),
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(conn, body):
    """One POST /api/predict on a kept-alive connection; the decoded answer."""
    conn.request("POST", "/api/predict", body, {"content-type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
    return json.loads(data)


def spans(answer):
    """The chains of an answer, without ours' extra fields (scores, labels)."""
    return [[(i["type"], i["span"], list(i["offset"])) for i in chain] for chain in answer["output"]]


class Server:
    """A server process on a loopback port, stopped on exit of the `with` block."""

    def __init__(self, label, cmd, env, port):
        self.label, self.cmd, self.env, self.port = label, cmd, env, port

    def __enter__(self):
        self.log = open(REPO / f"target/uninlu-bench-{self.port}.log", "w")
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        body = json.dumps({"text": "谷爱凌", "schema": {"人物": None}}).encode()
        deadline = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None:
                sys.exit(f"{self.label} exited with {self.proc.returncode}; see {self.log.name}")
            try:
                post(http.client.HTTPConnection("127.0.0.1", self.port, timeout=60), body)
                return self
            except (OSError, RuntimeError):
                if time.monotonic() > deadline:
                    sys.exit(f"{self.label} did not answer within 300 s; see {self.log.name}")
                time.sleep(1)

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def closed_loop(port, body, clients, seconds):
    """`clients` threads each sending `body` as soon as the last answer came, for `seconds`;
    the sorted latencies and the wall time."""
    times, lock, errors = [], threading.Lock(), []
    stop = time.monotonic() + seconds

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            while time.monotonic() < stop:
                t = time.perf_counter()
                post(conn, body)
                with lock:
                    times.append(time.perf_counter() - t)
        except Exception as e:  # reported after the figure, not swallowed
            errors.append(repr(e))

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        sys.exit(f"requests failed: {errors[:3]}")
    return sorted(times), wall


def one_line(row):
    return (f"{row['what']}: {row['requests_per_s']:.2f} requests/s, p50 {row['p50_ms']:.0f} ms, "
            f"p99 {row['p99_ms']:.0f} ms, {row['runs']} requests, "
            f"load {loads(row['load_before'])} -> {loads(row['load_after'])}")


def measure(args, report, server, answers):
    """Every example with 1 and --clients clients against a started server; records its answers."""
    rows = {}
    for name, (text, schema) in EXAMPLES.items():
        body = json.dumps({"text": text, "schema": schema}, ensure_ascii=False).encode()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
        answers[(server.label, name)] = spans(post(conn, body))
        post(conn, body)  # a second warm-up request
        for clients in sorted({1, args.clients}):
            def run():
                times, wall = closed_loop(server.port, body, clients, args.seconds)
                return dict(example=name, server=server.label, clients=clients, requests_per_s=len(times) / wall,
                            p50_ms=percentile_ms(times, 0.5), p99_ms=percentile_ms(times, 0.99), runs=len(times))
            rows[(name, clients)] = figure(args, report, f"{name}, {server.label}, {clients} client(s)", run)
    return rows


# What caps each side to AVX2 for --isa avx2: our kernels' level, and PyTorch's own kernels, oneDNN
# and MKL (which PyTorch's x86 wheels run matmuls with).
AVX2_ONLY = {
    "ours": {"NLU_KERNEL": "avx2"},
    "original": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}


def servers(args):
    """(label, command, environment) of each server to measure, the originals first."""
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    isa = lambda side: AVX2_ONLY[side] if args.isa == "avx2" else {}
    for threads in args.original_threads.split(","):
        env = dict(base, UNINLU_MODEL=str(args.model), **isa("original"))
        if threads != "default":
            env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        port = free_port()
        yield (f"original, {args.workers} workers x {threads} threads",
               [sys.executable, "-m", "gunicorn", "-w", str(args.workers), "-b", f"127.0.0.1:{port}",
                "--timeout", "300", "--chdir", str(REPO / "bench"), "uninlu_original:app"], env, port)
    for dtype in args.dtypes.split(","):
        port = free_port()
        yield (f"ours {dtype}",
               [str(args.bin / "nlu-server"), "serve", "--model", str(args.model), "--task", "uninlu",
                "--dtype", dtype, "--listen", f"127.0.0.1:{port}"],
               dict(base, RAYON_NUM_THREADS=str(args.threads), **isa("ours")), port)


def table(results, labels, clients_list):
    """One row per request and client count: each server's figure, then ours against the best
    original of the row."""
    originals = [l for l in labels if l.startswith("original")]
    ours = [l for l in labels if l not in originals]
    lines = ["| request | clients | " + " | ".join(f"{l}: req/s (p50 ms)" for l in labels) + " | "
             + " | ".join(f"{l} / best original" for l in ours) + " |",
             "|---|---:|" + "---:|" * (len(labels) + len(ours))]
    for name in EXAMPLES:
        for clients in clients_list:
            row = lambda l: results[l][(name, clients)]
            best = max(row(l)["requests_per_s"] for l in originals)
            cells = [f"{row(l)['requests_per_s']:.2f} ({row(l)['p50_ms']:.0f})" for l in labels]
            ratios = [f"{row(l)['requests_per_s'] / best:.2f}x" for l in ours]
            lines.append(f"| {name} | {clients} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


def versions():
    import modelscope
    import torch

    return f"torch {torch.__version__}, modelscope {modelscope.__version__}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", type=pathlib.Path, default=REPO / "target/bench-models/uninlu-base",
                    help="uninlu-base folder of bench/make_models.py (default: target/bench-models/uninlu-base)")
    ap.add_argument("--bin", type=pathlib.Path, default=REPO / "target/release",
                    help="folder with nlu-server (default: target/release)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="nlu-server's threads (default: all cores)")
    ap.add_argument("--workers", type=int, default=2, help="Gunicorn workers of the original (default 2, the seed's)")
    ap.add_argument("--original-threads", default="default,1",
                    help="OMP/MKL threads per original worker, one original per value: `default` (PyTorch's "
                         "own: all cores) or a number (default: default,1; ours is compared with the best)")
    ap.add_argument("--isa", choices=("native", "avx2"), default="native",
                    help="avx2: cap both sides to AVX2 + FMA (ours: NLU_KERNEL=avx2; PyTorch: ATEN_CPU_CAPABILITY, "
                         "ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS), a stand-in for an AVX2-only CPU")
    ap.add_argument("--dtypes", default="f32,int8", help="nlu-server --dtype values to measure (default f32,int8)")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds per figure (default 20)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients of the second figure (default 8)")
    add_gate_args(ap)
    args = ap.parse_args()

    if not (args.model / ".complete").is_file():
        sys.exit(f"{args.model} missing: run bench/make_models.py --models uninlu-base first")
    if not (args.bin / "nlu-server").is_file():
        sys.exit(f"{args.bin / 'nlu-server'} missing: cargo build --release -p nlu-server")
    notes = [f"nlu-server threads: {args.threads}; {args.seconds} s per figure; max load {args.max_load}; "
             f"instruction sets: {args.isa}",
             f"{cpu_line()}, {os.cpu_count()} cores; "
             f"{versions()}; source {source_version()} (binaries: {args.bin})"]
    report = Report(args.json_out, notes, one_line)

    results, answers, labels = {}, {}, []
    for label, cmd, env, port in servers(args):
        with Server(label, cmd, env, port) as server:
            results[label] = measure(args, report, server, answers)
        labels.append(label)
    for label in labels[1:]:
        for name in EXAMPLES:
            ours, original = answers[(label, name)], answers[(labels[0], name)]
            same = "the same spans as the original" if ours == original else (
                f"spans differ from the original: ours {ours} against {original}")
            report.note(f"{name}, {label}: {same}")
    print("\n".join(f"- {n}" for n in report.notes))
    print(f"\n{table(results, labels, sorted({1, args.clients}))}")
    print("\n" + "\n".join(f"- {one_line(r)}" for r in report.figures))
    report.save(finished=True)


if __name__ == "__main__":
    main()
