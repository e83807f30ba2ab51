//! Prompt text for one schema key: the chosen ancestors as `"{type}: {span}, "` each, then
//! `"{key}: "`, exactly as the original pipeline writes it.

use super::decode::ChainItem;

/// Prompts are tokenized with truncation to this many tokens (`[CLS]`/`[SEP]` included).
pub const PROMPT_MAX_TOKENS: usize = 128;

pub fn prompt(ancestors: &[ChainItem], key: &str) -> String {
    let mut text: String = ancestors
        .iter()
        .map(|a| format!("{}: {}, ", a.kind, a.span))
        .collect();
    text.push_str(key);
    text.push_str(": ");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: &str, span: &str) -> ChainItem {
        ChainItem {
            kind: kind.into(),
            span: span.into(),
            offset: [0, 0],
            score: None,
        }
    }

    #[test]
    fn root_prompt_is_the_key() {
        assert_eq!(prompt(&[], "人物"), "人物: ");
    }

    #[test]
    fn ancestors_prefix_the_key_in_order() {
        let chain = [item("人物", "谷爱凌"), item("赛事", "冬奥会")];
        assert_eq!(prompt(&chain, "时间"), "人物: 谷爱凌, 赛事: 冬奥会, 时间: ");
    }
}
