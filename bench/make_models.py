#!/usr/bin/env python3
"""Writes the models of the side-by-side benchmark into a cache folder outside git.

For each model, one folder `CACHE/NAME/` that every engine reads, so all run the same weights:
config.json, model.safetensors and the MiniLM tokenizer files (what nlu-server and PyTorch load),
and model.onnx (what ONNX Runtime loads, exported from those weights).

- minilm: all-MiniLM-L6-v2, real weights (the folder `scripts/fetch-minilm.sh` prints).
- bert-base: 12 layers, hidden 768, 12 heads, intermediate 3072; random weights (seed 0).
- bert-large: 24 layers, hidden 1024, 16 heads, intermediate 4096; random weights (seed 0).
- bert-base-reranker: a cross-encoder of BERT-base's shape (`BertForSequenceClassification`, one
  label, the shape of bge-reranker-base's encoder), random weights (seed 0); no model.onnx (the
  rerank figures compare nlu-server with PyTorch only).

Random weights cost the same work as trained ones; they use transformers' own initialisation
(normal, std 0.02; LayerNorm 1/0) and MiniLM's vocabulary (bert-base-uncased, 30,522 entries).
A folder with a `.complete` marker is reused; `--force` rewrites it. Needs torch, transformers,
safetensors, onnx and onnxscript (the dynamo ONNX exporter); never run by CI.

    python3 bench/make_models.py [--cache target/bench-models] [--models minilm,bert-base,bert-large,bert-base-reranker] [--force]

Prints the folder of each model.
"""

import argparse
import pathlib
import shutil
import subprocess
import sys

import torch
import transformers
from transformers import BertConfig, BertForSequenceClassification, BertModel

REPO = pathlib.Path(__file__).resolve().parent.parent
SHAPES = {
    "bert-base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    "bert-large": dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, intermediate_size=4096),
}
RERANKERS = {"bert-base-reranker": "bert-base"}
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
ONNX_OPSET = 18


def minilm_dir():
    """The real MiniLM folder, fetched (or found in its cache) by scripts/fetch-minilm.sh."""
    out = subprocess.run(
        ["bash", str(REPO / "scripts/fetch-minilm.sh")], check=True, capture_output=True, text=True
    )
    return pathlib.Path(out.stdout.strip().splitlines()[-1])


class LastHiddenState(torch.nn.Module):
    """BertModel with positional (input_ids, attention_mask) inputs and one tensor output, the
    form torch.onnx.export wants."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def export_onnx(model, path):
    """ONNX graph with dynamic batch and sequence axes; output `last_hidden_state`."""
    ids = torch.randint(1000, 2000, (2, 16))
    mask = torch.ones_like(ids)
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        LastHiddenState(model).eval(),
        (ids, mask),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state"],
        dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes},
        opset_version=ONNX_OPSET,
        dynamo=True,
        external_data=False,
    )


def check_onnx(model, path):
    """The exported graph must give what the PyTorch model gives, at a shape other than the
    export's (so the dynamic axes really are dynamic)."""
    import numpy as np
    import onnxruntime

    ids = torch.randint(1000, 2000, (3, 21))
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    err = float(np.abs(got - want).max())
    if err > 1e-3:
        sys.exit(f"{path}: ONNX output differs from PyTorch by {err}")


def write_model(name, folder, minilm):
    """Writes one model folder (HF files + model.onnx) and marks it complete."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if name == "minilm":
        for f in minilm.iterdir():
            (shutil.copytree if f.is_dir() else shutil.copy2)(f, folder / f.name)
        (folder / ".complete").unlink(missing_ok=True)
        model = BertModel.from_pretrained(folder, add_pooling_layer=False).eval()
    else:
        torch.manual_seed(0)
        shape = SHAPES[RERANKERS.get(name, name)]
        config = BertConfig(vocab_size=30522, hidden_act="gelu", num_labels=1, **shape)
        if name in RERANKERS:
            model = BertForSequenceClassification(config).eval()
        else:
            model = BertModel(config, add_pooling_layer=False).eval()
        model.save_pretrained(folder, safe_serialization=True)
        for f in TOKENIZER_FILES:
            shutil.copy2(minilm / f, folder / f)
    if name in RERANKERS:
        (folder / ".complete").touch()
        return
    export_onnx(model, folder / "model.onnx")
    check_onnx(model, folder / "model.onnx")
    (folder / ".complete").touch()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=pathlib.Path, default=REPO / "target/bench-models",
                    help="folder that receives one sub-folder per model (default: target/bench-models)")
    ap.add_argument("--models", default="minilm,bert-base,bert-large,bert-base-reranker",
                    help="comma-separated subset of minilm, bert-base, bert-large, bert-base-reranker")
    ap.add_argument("--force", action="store_true", help="rewrite folders that are already complete")
    args = ap.parse_args()
    transformers.logging.set_verbosity_error()  # MiniLM's unused pooler weights are expected
    names = args.models.split(",")
    unknown = set(names) - {"minilm", *SHAPES, *RERANKERS}
    if unknown:
        ap.error(f"unknown model(s): {', '.join(sorted(unknown))}")
    minilm = minilm_dir()
    for name in names:
        folder = args.cache / name
        if args.force or not (folder / ".complete").is_file():
            print(f"writing {name} ...", file=sys.stderr)
            write_model(name, folder, minilm)
        print(folder)


if __name__ == "__main__":
    main()
