//! The WordPiece tokenizer of BERT models, loaded from `tokenizer.json` or rebuilt from
//! `vocab.txt` + `tokenizer_config.json`; both give the same ids. Offsets are in Unicode code
//! points, as the UniNLU output and Python's string indexing use them. SentencePiece (Unigram)
//! tokenizers of XLM-RoBERTa models come as `tokenizer.json` only; their special tokens
//! (`<s> A </s>`, pairs `<s> A </s></s> B </s>`) come from the file's post-processor, like
//! BERT's (`[CLS] A [SEP] B [SEP]`).

use std::path::Path;

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::utils::truncation::{
    truncate_encodings, TruncationDirection, TruncationParams, TruncationStrategy,
};
use tokenizers::{AddedToken, PostProcessor};

use super::files::TokenizerFiles;
use super::{ModelError, Result};

/// Token ids of one text and each token's `[start, end)` code-point span (`(0, 0)` for
/// `[CLS]`/`[SEP]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoding {
    pub ids: Vec<u32>,
    pub offsets: Vec<(usize, usize)>,
}

impl Encoding {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// One token of an [`Encoding`], for people (`/tokenize`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub id: u32,
    pub text: String,
    /// `[CLS]`, `[SEP]`, `<s>` and the like, which cover no text.
    pub special: bool,
    /// The `[start, end)` code points of the text it covers; `None` for a special token.
    pub span: Option<(usize, usize)>,
}

/// Token ids of a text pair, special tokens included, and the segment of each token (0 for the
/// first text and its special tokens, 1 for the second, as the post-processor numbers them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairEncoding {
    pub ids: Vec<u32>,
    pub segments: Vec<u32>,
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

impl Tokenizer {
    pub fn load(files: &TokenizerFiles) -> Result<Self> {
        match files {
            TokenizerFiles::Json(path) => Self::from_json(path),
            TokenizerFiles::Vocab { vocab, config } => Self::from_vocab(vocab, config.as_deref()),
        }
    }

    pub fn from_json(path: &Path) -> Result<Self> {
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| tok_err(format!("{}: {e}", path.display())))?;
        // Padding and truncation are the caller's decisions, not the file's.
        inner.with_padding(None);
        inner.with_truncation(None).map_err(tok_err)?;
        Ok(Self { inner })
    }

    /// The pipeline of `BertTokenizerFast`: clean text, split CJK characters, lower-case (and
    /// strip accents) per `do_lower_case`, WordPiece with `##`, `[CLS] ... [SEP]`.
    pub fn from_vocab(vocab: &Path, config: Option<&Path>) -> Result<Self> {
        let config: serde_json::Value = match config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| tok_err(format!("{}: {e}", path.display())))?;
                serde_json::from_str(&text)
                    .map_err(|e| tok_err(format!("{}: {e}", path.display())))?
            }
            None => serde_json::Value::Null,
        };
        let flag = |key: &str| config.get(key).and_then(|v| v.as_bool());
        let token = |key: &str, default: &str| {
            config
                .get(key)
                .and_then(|v| v.as_str().or_else(|| v.get("content")?.as_str()))
                .unwrap_or(default)
                .to_string()
        };
        let lowercase = flag("do_lower_case").unwrap_or(true);
        let (unk, cls, sep) = (
            token("unk_token", "[UNK]"),
            token("cls_token", "[CLS]"),
            token("sep_token", "[SEP]"),
        );
        let specials = [
            unk.clone(),
            sep.clone(),
            token("pad_token", "[PAD]"),
            cls.clone(),
            token("mask_token", "[MASK]"),
        ];
        let wordpiece = WordPiece::from_file(&vocab.to_string_lossy())
            .unk_token(unk)
            .continuing_subword_prefix("##".into())
            .max_input_chars_per_word(100)
            .build()
            .map_err(|e| tok_err(format!("{}: {e}", vocab.display())))?;
        let id = |t: &str| {
            tokenizers::Model::token_to_id(&wordpiece, t)
                .ok_or_else(|| tok_err(format!("{} has no {t} token", vocab.display())))
        };
        let processor = BertProcessing::new((sep.clone(), id(&sep)?), (cls.clone(), id(&cls)?));
        // Special tokens are never split or lower-cased, as in the Python tokenizers.
        let known: Vec<AddedToken> = specials
            .iter()
            .filter(|t| id(t).is_ok())
            .map(|t| AddedToken::from(t.clone(), true))
            .collect();
        let mut inner = tokenizers::Tokenizer::new(wordpiece);
        inner
            .with_normalizer(Some(BertNormalizer::new(
                true,
                flag("tokenize_chinese_chars").unwrap_or(true),
                flag("strip_accents"),
                lowercase,
            )))
            .map_err(tok_err)?;
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        inner.with_post_processor(Some(processor));
        inner.with_decoder(Some(WordPieceDecoder::default()));
        inner.add_special_tokens(known).map_err(tok_err)?;
        Ok(Self { inner })
    }

    /// Encodes with special tokens. `max_len` truncates the way the Python tokenizers do for a
    /// single BERT sequence: the content is cut so that `[CLS] ... [SEP]` fits in `max_len`.
    pub fn encode(&self, text: &str, max_len: Option<usize>) -> Result<Encoding> {
        self.encode_with(text, max_len, true)
    }

    /// [`Self::encode`], or without special tokens when `special` is false (then `max_len`
    /// simply keeps the first tokens).
    pub fn encode_with(&self, text: &str, max_len: Option<usize>, special: bool) -> Result<Encoding> {
        let enc = self
            .inner
            .encode_char_offsets(text, special)
            .map_err(tok_err)?;
        let mut ids = enc.get_ids().to_vec();
        let mut offsets = enc.get_offsets().to_vec();
        if let Some(max) = max_len.filter(|&m| ids.len() > m) {
            if special {
                if max < 2 {
                    return Err(ModelError::Input(format!(
                        "a maximum length of {max} cannot hold [CLS] and [SEP]"
                    )));
                }
                let last = ids.len() - 1;
                ids.swap(max - 1, last);
                offsets.swap(max - 1, last);
            }
            ids.truncate(max);
            offsets.truncate(max);
        }
        Ok(Encoding { ids, offsets })
    }

    /// The tokens of `encoding` (made from `text`) as people read them: a special token by its
    /// name, any other by the characters of `text` it covers (offsets in code points).
    pub fn tokens(&self, text: &str, encoding: &Encoding) -> Vec<Token> {
        let added = self.inner.get_added_tokens_decoder();
        let chars: Vec<char> = text.chars().collect();
        encoding
            .ids
            .iter()
            .zip(&encoding.offsets)
            .map(|(&id, &(start, stop))| match added.get(&id).filter(|t| t.special) {
                Some(token) => Token {
                    id,
                    text: token.content.clone(),
                    special: true,
                    span: None,
                },
                None => Token {
                    id,
                    text: chars[start.min(chars.len())..stop.min(chars.len())]
                        .iter()
                        .collect(),
                    special: false,
                    span: Some((start, stop)),
                },
            })
            .collect()
    }

    /// The text of `ids`, without the special tokens when `skip_special`; ids outside the
    /// vocabulary are an input error.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let size = self.vocab_size();
        if let Some(id) = ids.iter().find(|&&id| id as usize >= size) {
            return Err(ModelError::Input(format!(
                "token id {id} is not in the vocabulary (0 to {})",
                size - 1
            )));
        }
        self.inner.decode(ids, skip_special).map_err(tok_err)
    }

    /// Encodes a pair (query, passage) with the post-processor's special tokens. `max_len`
    /// truncates as the Python tokenizers do with `truncation=True` (`longest_first`): the longer
    /// text loses tokens from its end first, so that the pair with its special tokens fits.
    pub fn encode_pair(
        &self,
        first: &str,
        second: &str,
        max_len: Option<usize>,
    ) -> Result<PairEncoding> {
        let a = self
            .inner
            .encode_char_offsets(first, false)
            .map_err(tok_err)?;
        let mut b = self
            .inner
            .encode_char_offsets(second, false)
            .map_err(tok_err)?;
        // As `encode((first, second))` numbers them before the post-processor.
        b.set_type_ids(vec![1; b.len()]);
        let (a, b) = match max_len {
            Some(max) => {
                let added = self
                    .inner
                    .get_post_processor()
                    .map_or(0, |p| p.added_tokens(true));
                if max <= added {
                    return Err(ModelError::Input(format!(
                        "a maximum length of {max} cannot hold a pair's {added} special tokens"
                    )));
                }
                let params = TruncationParams {
                    direction: TruncationDirection::Right,
                    max_length: max - added,
                    strategy: TruncationStrategy::LongestFirst,
                    stride: 0,
                };
                let (a, b) = truncate_encodings(a, Some(b), &params).map_err(tok_err)?;
                (a, b.expect("the pair stays a pair"))
            }
            None => (a, b),
        };
        let enc = self.inner.post_process(a, Some(b), true).map_err(tok_err)?;
        Ok(PairEncoding {
            ids: enc.get_ids().to_vec(),
            segments: enc.get_type_ids().to_vec(),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of `token` (special tokens included), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}
