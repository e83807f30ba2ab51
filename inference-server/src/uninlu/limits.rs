//! Bounds on the work one prediction request may cause; the original pipeline has none.

/// Defaults suit the production model: a few windows of text and schemas of a few levels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Characters (code points) of input text.
    pub max_text_chars: usize,
    /// Sliding windows of 384 tokens the text may need.
    pub max_windows: usize,
    /// Levels of nested schema (a flat NER schema is 1).
    pub max_schema_depth: usize,
    /// Keys in the whole schema, all levels together.
    pub max_schema_keys: usize,
    /// Prompts run for one request, counted as the traversal expands.
    pub max_prompts: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_text_chars: 4096,
            max_windows: 8,
            max_schema_depth: 4,
            max_schema_keys: 64,
            max_prompts: 512,
        }
    }
}
