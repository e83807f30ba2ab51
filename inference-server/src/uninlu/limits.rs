//! Bounds on the work one prediction request may cause; the original pipeline has none. These
//! are also the server's flags, so the defaults below are the only ones.

/// Defaults suit the production model: a few windows of text and schemas of a few levels.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct Limits {
    /// UniNLU: most characters (code points) in the text.
    #[arg(long, env = "NLU_MAX_TEXT_CHARS", default_value_t = Limits::DEFAULT.max_text_chars)]
    pub max_text_chars: usize,

    /// UniNLU: most sliding windows (384 tokens, stride 352) per text.
    #[arg(long, env = "NLU_MAX_WINDOWS", default_value_t = Limits::DEFAULT.max_windows)]
    pub max_windows: usize,

    /// UniNLU: deepest schema nesting (a flat NER schema is 1).
    #[arg(long, env = "NLU_MAX_SCHEMA_DEPTH", default_value_t = Limits::DEFAULT.max_schema_depth)]
    pub max_schema_depth: usize,

    /// UniNLU: most keys in the whole schema, all levels together.
    #[arg(long, env = "NLU_MAX_SCHEMA_KEYS", default_value_t = Limits::DEFAULT.max_schema_keys)]
    pub max_schema_keys: usize,

    /// UniNLU: most prompts one request may run, counted as the traversal expands (422 beyond).
    #[arg(long, env = "NLU_MAX_PROMPTS", default_value_t = Limits::DEFAULT.max_prompts)]
    pub max_prompts: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_text_chars: 10_000,
        max_windows: 16,
        max_schema_depth: 4,
        max_schema_keys: 64,
        max_prompts: 512,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}
