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
- uninlu-base: SiameseUniNLU of `nlp_structbert_siamese-uninlu_chinese-base`'s shape (BERT-base,
  6 + 6 layers, the fixtures' Chinese vocab of 21,128 entries), random weights (seed 0), in the
  fixture's layout (`pytorch_model.bin` for ModelScope, `model.safetensors` for nlu-server, both
  configs); no model.onnx (`bench/uninlu_side_by_side.py` compares nlu-server with ModelScope's
  pipeline). Random pointer heads would find a span at about one token in five, so the two head
  biases are set (`calibrate_heads`, with ModelScope's own model code) such that the relation
  example's root prompt finds exactly one person, as the trained model does: that request then
  runs 1 + 4 prompts, like the real one. Needs modelscope.

Random weights cost the same work as trained ones; they use transformers' own initialisation
(normal, std 0.02; LayerNorm 1/0) and MiniLM's vocabulary (bert-base-uncased, 30,522 entries).
A folder with a `.complete` marker is reused; `--force` rewrites it. Needs torch, transformers,
safetensors, onnx and onnxscript (the dynamo ONNX exporter); never run by CI.

    python3 bench/make_models.py [--cache target/bench-models] [--models minilm,bert-base,bert-large,bert-base-reranker,uninlu-base] [--force]

Prints the folder of each model.
"""

import argparse
import json
import pathlib
import re
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
UNINLU = "uninlu-base"
# The tiny fixture model: its vocab, tokenizer and configs (sizes replaced) make uninlu-base.
UNINLU_FIXTURE = REPO.parent / "shared/fixtures/uninlu-tiny/model"
UNINLU_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "configuration.json")
# The relation example of the model card (bench_model and bench/uninlu_side_by_side.py run it).
RELATION_TEXT = "在北京冬奥会自由式中，2月8日上午，滑雪女子大跳台决赛中中国选手谷爱凌以188.25分获得金牌。"
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


def uninlu_state(config):
    """Random SiameseUniNLU weights under the checkpoint's names: a 12-layer BertModel whose
    layers 0-5 are `plm.encoder.layer.*` and 6-11 `crossattention.layer.0-5`, plus the two
    pointer heads."""
    bert = BertModel(config, add_pooling_layer=True)
    half = config.num_hidden_layers // 2
    state = {}
    for key, value in bert.state_dict().items():
        m = re.match(r"encoder\.layer\.(\d+)\.(.*)", key)
        if m and int(m[1]) >= half:
            key = f"crossattention.layer.{int(m[1]) - half}.{m[2]}"
        else:
            key = f"plm.{key}"
        state[key] = value.contiguous()
    for head in ("head_clsf", "tail_clsf"):
        linear = torch.nn.Linear(config.hidden_size, 1)
        torch.nn.init.normal_(linear.weight, std=config.initializer_range)
        state[f"{head}.weight"], state[f"{head}.bias"] = linear.weight.detach(), torch.zeros(1)
    return state


def between(values):
    """The bias that puts the threshold 0.5 halfway between the two largest `values`, so that
    exactly the largest crosses it."""
    top = sorted(values, reverse=True)
    return 0.5 - (top[0] + top[1]) / 2


def calibrate_heads(folder, state):
    """Sets the two head biases so that the relation example's root prompt (`人物: `) finds
    exactly one span: the head at the text token with the largest start logit, ending at the
    largest end logit from there on. Computed with ModelScope's model and preprocessing, the
    code the pipeline runs."""
    from modelscope.models import Model
    from modelscope.preprocessors import Preprocessor

    model = Model.from_pretrained(str(folder)).eval()
    prep = Preprocessor.from_pretrained(str(folder))
    text = prep([RELATION_TEXT])[0]
    hint = prep(["人物: "], padding=True, truncation=True, max_length=128)[0]
    ids, mask = torch.tensor([text.ids]), torch.tensor([text.attention_mask])
    with torch.no_grad():
        states = model.get_plm_sequence_output(ids, mask)
        head, tail = model.fast_inference(states, mask, torch.tensor([hint.ids]),
                                          torch.tensor([hint.attention_mask]))
    head, tail = head[0, 1:-1].tolist(), tail[0, 1:-1].tolist()  # not [CLS] / [SEP]
    start = max(range(len(head)), key=head.__getitem__)
    state["head_clsf.bias"] = torch.tensor([between(head)])
    state["tail_clsf.bias"] = torch.tensor([between(tail[start:] + [float("-inf")])])


def write_uninlu(folder):
    """uninlu-base: the fixture's files with BERT-base sizes, random weights in both formats."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    config = json.loads((UNINLU_FIXTURE / "config.json").read_text())
    config.update(SHAPES["bert-base"], vocab_size=21128)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for f in UNINLU_FILES:
        shutil.copy2(UNINLU_FIXTURE / f, folder / f)
    state = uninlu_state(BertConfig(**config))
    torch.save(state, folder / "pytorch_model.bin")  # what calibrate_heads loads through ModelScope
    calibrate_heads(folder, state)
    torch.save(state, folder / "pytorch_model.bin")
    save_file(state, folder / "model.safetensors")


def write_model(name, folder, minilm):
    """Writes one model folder (HF files + model.onnx) and marks it complete."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if name == UNINLU:
        write_uninlu(folder)
        (folder / ".complete").touch()
        return
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
                    help=f"comma-separated subset of minilm, bert-base, bert-large, bert-base-reranker, {UNINLU}")
    ap.add_argument("--force", action="store_true", help="rewrite folders that are already complete")
    args = ap.parse_args()
    transformers.logging.set_verbosity_error()  # MiniLM's unused pooler weights are expected
    names = args.models.split(",")
    unknown = set(names) - {"minilm", *SHAPES, *RERANKERS, UNINLU}
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
