#!/usr/bin/env python3
"""Makes the rerank / XLM-RoBERTa / bge-m3 reference fixtures in
inference-server/tests/fixtures/rerank/ (committed; CI never runs this script).

Tiny random models with the real architectures, and what the Python reference code computes
for them:

- xlmr-m3-tiny/: `XLMRobertaModel` (2 layers, hidden 32, 4 heads, 514 positions, padding
  index 1) in the bge-m3 layout: unprefixed weights, a SentencePiece Unigram tokenizer.json
  with the XLM-R post-processor (`<s> A </s>`, `<s> A </s></s> B </s>`), and bge-m3's extra
  heads `sparse_linear` (hidden -> 1) and `colbert_linear` (hidden -> hidden), each as
  `*.safetensors` (what our loader prefers) and `*.pt` (torch.save of the state dict, as the
  real bge-m3 repository ships them).
- xlmr-reranker-tiny/: `XLMRobertaForSequenceClassification`, num_labels 1 (bge-reranker
  layout: `roberta.` prefix, `classifier.dense` / `classifier.out_proj`); same tokenizer.
- bert-reranker-tiny/: `BertForSequenceClassification`, num_labels 1 (`bert.` prefix, pooler,
  `classifier`), a WordPiece tokenizer trained on the same sentences (tokenizer.json and
  vocab.txt), and sentence-transformers' CrossEncoder activation in config.json.
- expected.json: ids, CLS and mean embeddings, bge-m3 sparse weights and ColBERT vectors per
  text; ids, segments and logits per (query, passage) pair for both rerankers.

The weights are random and large on purpose (std 0.2-0.5, not 0.02), so that positions, token
types and every head visibly move the outputs: a wrong position offset or a missing head
fails the parity tests instead of hiding under LayerNorm.

Usage (about 6 GB of wheels; torch from PyPI):
    python3 -m venv target/rerank-venv
    target/rerank-venv/bin/pip install torch transformers tokenizers safetensors \
        sentencepiece protobuf
    target/rerank-venv/bin/python scripts/make-rerank-fixtures.py

Written with torch 2.15, transformers 5.25, tokenizers 0.23, sentencepiece 0.2.
"""

import io
import json
import math
import os
import random
import shutil
from collections import defaultdict
from pathlib import Path

import sentencepiece as spm
import torch
from safetensors.torch import save_file
from sentencepiece import sentencepiece_model_pb2
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
    XLMRobertaModel,
    XLMRobertaTokenizer,
)

SEED = 20261201
MAX_LENGTH = 512
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "inference-server" / "tests" / "fixtures" / "rerank"

HIDDEN, LAYERS, HEADS, FFN = 32, 2, 4, 64

# ---------------------------------------------------------------------------------------------
# A few hundred Chinese and English sentences for the tokenizers.

ZH_SUBJECTS = ["我们", "他们", "这位老师", "我的朋友", "研究人员", "这家公司", "小明", "用户",
               "工程师", "学生们", "医生", "城市居民"]
ZH_VERBS = ["喜欢", "正在研究", "讨论了", "发布了", "需要", "打算购买", "分析了", "推荐",
            "翻译了", "比较了", "测试了", "改进了"]
ZH_OBJECTS = ["新的搜索引擎", "北京的天气", "机器学习模型", "一本历史书", "上海的美食",
              "文本排序算法", "开源软件", "中文分词工具", "电动汽车", "健康的饮食习惯",
              "人工智能的未来", "长江沿岸的城市", "向量数据库", "多语言检索系统"]
ZH_TAILS = ["。", "，效果很好。", "，但是还有问题。", "吗？", "，大家都很满意。", "已经三年了。"]
EN_SUBJECTS = ["The team", "My friend", "A researcher", "The company", "Our users", "The model",
               "Every student", "The engineer", "A doctor", "The library"]
EN_VERBS = ["likes", "is studying", "released", "needs", "compared", "tested", "improved",
            "translated", "recommends", "discussed"]
EN_OBJECTS = ["a new search engine", "the weather in Beijing", "machine learning models",
              "a history book", "cross-encoder rerankers", "open source software",
              "multilingual retrieval", "electric cars", "healthy food", "vector databases",
              "sparse lexical weights", "the future of AI"]
EN_TAILS = [".", " yesterday.", " with great care.", "?", " and it worked well.",
            " for three years."]


def corpus(rng):
    sents = []
    for _ in range(220):
        sents.append(rng.choice(ZH_SUBJECTS) + rng.choice(ZH_VERBS) + rng.choice(ZH_OBJECTS)
                     + rng.choice(ZH_TAILS))
    for _ in range(220):
        sents.append(" ".join([rng.choice(EN_SUBJECTS), rng.choice(EN_VERBS),
                               rng.choice(EN_OBJECTS)]) + rng.choice(EN_TAILS))
    for _ in range(60):
        sents.append(rng.choice(ZH_SUBJECTS) + rng.choice(ZH_VERBS) + " "
                     + rng.choice(EN_OBJECTS) + rng.choice(ZH_TAILS))
    rng.shuffle(sents)
    return sents


# ---------------------------------------------------------------------------------------------
# Tokenizers.

def xlmr_tokenizer(sents, out_dir):
    """A SentencePiece Unigram model converted the way transformers converts XLM-R's
    `sentencepiece.bpe.model` (convert_slow_tokenizer.XLMRobertaConverter: `<s> <pad> </s>
    <unk>`, the pieces after SentencePiece's own three, `<mask>` last; the nmt_nfkc charsmap
    as a Precompiled normalizer; the `<s> A </s></s> B </s>` template)."""
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sents), model_writer=buf, vocab_size=700,
        model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
        num_threads=1, seed_sentencepiece_size=100000, minloglevel=2)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(buf.getvalue())
    assert [p.piece for p in proto.pieces[:3]] == ["<unk>", "<s>", "</s>"]
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(p.piece, p.score) for p in proto.pieces[3:]]
    vocab += [("<mask>", 0.0)]
    tok = XLMRobertaTokenizer(
        vocab=vocab, _spm_precompiled_charsmap=proto.normalizer_spec.precompiled_charsmap)
    tok.save_pretrained(out_dir)
    # XLM-R's ids are SentencePiece's plus fairseq's offset of 1.
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    for s in sents[:50]:
        want = [0] + [i + 1 for i in sp.encode(s)] + [2]
        assert tok(s)["input_ids"] == want, (s, tok(s)["input_ids"], want)
    return tok


def bert_tokenizer(sents, out_dir):
    """A WordPiece vocabulary trained on the same sentences, in BertTokenizerFast's pipeline."""
    tok = Tokenizer(WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(sents, WordPieceTrainer(vocab_size=600, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    assert [i for _, i in vocab] == list(range(len(vocab)))
    (out_dir / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
    (out_dir / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": True, "tokenizer_class": "BertTokenizer", "cls_token": "[CLS]",
         "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
         "mask_token": "[MASK]", "model_max_length": MAX_LENGTH}, indent=2) + "\n")
    return tok


def reference_tokenizer(path):
    """The tokenizer as the Python libraries read tokenizer.json, truncating like
    `tokenizer(..., truncation=True, max_length=MAX_LENGTH)` (longest_first)."""
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(MAX_LENGTH, strategy="longest_first")
    return tok


# ---------------------------------------------------------------------------------------------
# Models.

def randomize(model, gen):
    """Large random weights (see the module doc); LayerNorm scales around 1."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "embeddings" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    model.eval()
    return model


def xlmr_config(vocab_size, **extra):
    return XLMRobertaConfig(
        vocab_size=vocab_size, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, intermediate_size=FFN, max_position_embeddings=514,
        type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        layer_norm_eps=1e-5, hidden_act="gelu", **extra)


def save_model(model, out_dir, drop=()):
    model.save_pretrained(out_dir, safe_serialization=True)
    cfg_path = out_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in drop:
        cfg.pop(key, None)
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------
# bge-m3's heads, as FlagEmbedding computes them at inference
# (FlagEmbedding/finetune/embedder/encoder_only/m3/modeling.py,
#  EncoderOnlyEmbedderM3ModelForInference.forward, _sparse_embedding, _colbert_embedding;
#  FlagEmbedding/inference/embedder/encoder_only/m3.py, M3Embedder.encode_single_device,
#  _process_token_weights, _process_colbert_vecs). Re-typed here, not imported: FlagEmbedding
# pulls in far more than these lines.

def m3_sparse(last_hidden_state, input_ids, sparse_linear, unused_tokens):
    # _sparse_embedding(..., return_embedding=False): torch.relu(self.sparse_linear(hidden))
    token_weights = torch.relu(sparse_linear(last_hidden_state)).squeeze(-1)
    out = []
    for weights, ids in zip(token_weights.tolist(), input_ids.tolist()):
        # _process_token_weights: the largest weight per token id, skipping the unused
        # (cls, eos, pad, unk) tokens and weights that are not positive.
        result = defaultdict(int)
        for w, idx in zip(weights, ids):
            if idx not in unused_tokens and w > 0:
                if w > result[str(idx)]:
                    result[str(idx)] = w
        out.append(dict(result))
    return out


def m3_colbert(last_hidden_state, attention_mask, colbert_linear):
    # _colbert_embedding: colbert_linear(last_hidden_state[:, 1:]) * mask[:, 1:]
    vecs = colbert_linear(last_hidden_state[:, 1:])
    vecs = vecs * attention_mask[:, 1:][:, :, None].float()
    # normalize_embeddings (M3Embedder's default True): F.normalize(colbert_vecs, dim=-1)
    vecs = torch.nn.functional.normalize(vecs, dim=-1)
    # _process_colbert_vecs: colbert_vecs[:tokens_num - 1] (the CLS vector is not used)
    return [v[: int(m.sum()) - 1] for v, m in zip(vecs, attention_mask)]


# ---------------------------------------------------------------------------------------------
# Inputs.

def long_text(rng, sents):
    text = ""
    while len(text) < 1400:
        text += rng.choice(sents)
    return text


TEXTS = [
    "今天北京的天气很好。",
    "The quick brown fox jumps over the lazy dog.",
    "我的朋友推荐了 a new search engine，效果很好。",
    "重排序模型",
    "Cross-encoder rerankers score a query and a passage together, token by token.",
    "研究人员比较了多语言检索系统和向量数据库，发现稀疏词权重对专有名词特别有用。",
    "ok",
]

PAIRS = [
    ("北京的天气", "今天北京的天气很好。"),
    ("北京的天气", "这家公司发布了开源软件。"),
    ("what is a reranker?", "A reranker scores a query and a passage together."),
    ("what is a reranker?", "Electric cars need healthy food."),
    ("向量数据库", "Vector databases store embeddings for multilingual retrieval."),
    ("机器学习模型", "研究人员分析了机器学习模型，但是还有问题。"),
    ("x", "y"),
]


def rounded(values, digits):
    return [round(float(v), digits) for v in values]


def main():
    rng = random.Random(SEED)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    sents = corpus(rng)
    texts = TEXTS + [long_text(rng, sents)]
    pairs = PAIRS + [("长文本的查询：" + long_text(rng, sents)[:40], long_text(rng, sents))]

    if OUT.exists():
        shutil.rmtree(OUT)
    m3_dir, xr_dir, br_dir = OUT / "xlmr-m3-tiny", OUT / "xlmr-reranker-tiny", OUT / "bert-reranker-tiny"
    for d in (m3_dir, xr_dir, br_dir):
        d.mkdir(parents=True)

    # Tokenizers.
    xtok = xlmr_tokenizer(sents, m3_dir)
    vocab_size = len(xtok)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        os.symlink(f"../xlmr-m3-tiny/{name}", xr_dir / name)
    btok = bert_tokenizer(sents, br_dir)
    x_ref = reference_tokenizer(m3_dir / "tokenizer.json")
    b_ref = reference_tokenizer(br_dir / "tokenizer.json")
    # transformers reads the folders to the same ids (the path sentence-transformers takes).
    x_auto = AutoTokenizer.from_pretrained(m3_dir)
    b_auto = AutoTokenizer.from_pretrained(br_dir)

    # bge-m3-style encoder with its heads.
    m3 = randomize(XLMRobertaModel(xlmr_config(vocab_size)), gen)
    save_model(m3, m3_dir)
    (m3_dir / "1_Pooling").mkdir()
    (m3_dir / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": True,
         "pooling_mode_mean_tokens": False}, indent=2) + "\n")
    sparse_linear = randomize(torch.nn.Linear(HIDDEN, 1), gen)
    colbert_linear = randomize(torch.nn.Linear(HIDDEN, HIDDEN), gen)
    for name, head in (("sparse_linear", sparse_linear), ("colbert_linear", colbert_linear)):
        state = {k: v.contiguous() for k, v in head.state_dict().items()}
        save_file(state, m3_dir / f"{name}.safetensors")
        torch.save(state, m3_dir / f"{name}.pt")

    # Rerankers.
    xr = randomize(XLMRobertaForSequenceClassification(xlmr_config(vocab_size, num_labels=1)), gen)
    save_model(xr, xr_dir)
    bcfg = BertConfig(
        vocab_size=btok.get_vocab_size(), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, intermediate_size=FFN, max_position_embeddings=MAX_LENGTH,
        type_vocab_size=2, pad_token_id=0, hidden_act="gelu", num_labels=1)
    br = randomize(BertForSequenceClassification(bcfg), gen)
    save_model(br, br_dir)
    # sentence-transformers >= 4 writes its CrossEncoder activation here.
    cfg = json.loads((br_dir / "config.json").read_text())
    cfg["sentence_transformers"] = {"activation_fn": "torch.nn.modules.activation.Sigmoid"}
    (br_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    expected = {"max_length": MAX_LENGTH, "texts": [], "pairs": []}

    # Embeddings: all texts in one padded batch, as the Python code runs them.
    encs = x_ref.encode_batch(texts)
    for text, enc in zip(texts, encs):
        assert x_auto(text, truncation=True, max_length=MAX_LENGTH)["input_ids"] == enc.ids
    width = max(len(e.ids) for e in encs)
    ids = torch.tensor([e.ids + [1] * (width - len(e.ids)) for e in encs])
    mask = torch.tensor([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in encs])
    with torch.no_grad():
        hidden = m3(input_ids=ids, attention_mask=mask).last_hidden_state
        mean = (hidden * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True)
        unused = {xtok.convert_tokens_to_ids(t) for t in
                  (xtok.cls_token, xtok.eos_token, xtok.pad_token, xtok.unk_token)}
        sparse = m3_sparse(hidden, ids, sparse_linear, unused)
        colbert = m3_colbert(hidden, mask, colbert_linear)
    for i, (text, enc) in enumerate(zip(texts, encs)):
        expected["texts"].append({
            "text": text,
            "ids": enc.ids,
            "cls": rounded(hidden[i, 0], 7),
            "mean": rounded(mean[i], 7),
            "sparse": {k: round(v, 7) for k, v in sparse[i].items()},
            "colbert": [rounded(v, 6) for v in colbert[i]],
        })

    # Rerank: each model's pairs in one padded batch.
    def run_pairs(ref, auto, model, pad_id, field):
        encs = ref.encode_batch(pairs)
        for (q, p), enc in zip(pairs, encs):
            got = auto(q, p, truncation=True, max_length=MAX_LENGTH)
            assert got["input_ids"] == enc.ids
        width = max(len(e.ids) for e in encs)
        ids = torch.tensor([e.ids + [pad_id] * (width - len(e.ids)) for e in encs])
        mask = torch.tensor([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in encs])
        types = torch.tensor([e.type_ids + [0] * (width - len(e.ids)) for e in encs])
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        assert logits.shape == (len(pairs), 1)
        for i, enc in enumerate(encs):
            if len(expected["pairs"]) <= i:
                expected["pairs"].append({"query": pairs[i][0], "passage": pairs[i][1]})
            logit = float(logits[i, 0])
            expected["pairs"][i][field] = {
                "ids": enc.ids,
                "segments": enc.type_ids,
                "logit": logit,
                "sigmoid": 1.0 / (1.0 + math.exp(-logit)),
            }

    run_pairs(x_ref, x_auto, xr, 1, "xlmr")
    run_pairs(b_ref, b_auto, br, 0, "bert")

    (OUT / "expected.json").write_text(json.dumps(expected, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file() and not f.is_symlink())
    print(f"wrote {OUT} ({total / 1e6:.2f} MB); XLM-R vocab {vocab_size}, "
          f"BERT vocab {btok.get_vocab_size()}; lengths {[len(e.ids) for e in encs]}")


if __name__ == "__main__":
    main()
