//! Which UniNLU task a request expresses, for the per-task scopes (`predict:<task>`). The model
//! runs every task the same way, as span extraction guided by prompts; only the schema's shape
//! and the text's format tell the tasks apart (spec/uninlu.md, "Task formats"). Where they do
//! not tell it reliably the answer is `None`, and the request needs the broad scope `predict`.
//!
//! The rule (also in docs/auth.md, "Per-task scopes"):
//! - A text with a label list (`label1,label2|text`: a `|` anywhere, as the pipeline reads it)
//!   and a schema of one key, a leaf, that names the task: `情感分类` sentiment, `分类`
//!   classification, `文本匹配` match, `段落2和段落1的关系是：` nli, a question (ending in `?` or
//!   `？`) mrc (multiple choice). Any other schema over a label list: `None`.
//! - A plain text and a schema of leaves only: ner when no key is a question, mrc when every
//!   key is one, `None` for a mix.
//! - A plain text and a schema of two levels, every top key with sub-keys and every sub-key a
//!   leaf: sentiment for `{"属性词": {"情感词": null}}` (attribute sentiment); event when every
//!   top key is an event trigger (its name holds `触发词`, as in `胜负(事件触发词)`), relation
//!   when none is, `None` for a mix.
//! - Anything else (leaves beside nested keys, three levels or more): `None`.

use nlu_crds::access::UninluTask;

use super::{Schema, SchemaNode};

/// The keys that name the task of a one-leaf schema over a label list: the model card's, which
/// the built-in task types of `POST /predict` use.
const LABEL_TASKS: [(&str, UninluTask); 4] = [
    ("情感分类", UninluTask::Sentiment),
    ("分类", UninluTask::Classification),
    ("文本匹配", UninluTask::Match),
    ("段落2和段落1的关系是：", UninluTask::Nli),
];

/// What names an event trigger among a schema's top keys.
const TRIGGER: &str = "触发词";

/// The task `text` and `schema` express, or `None` when the rule above cannot tell. Pure.
pub fn task_of(text: &str, schema: &Schema) -> Option<UninluTask> {
    let nodes = schema.nodes.as_slice();
    if text.contains('|') {
        let [SchemaNode {
            key,
            children: None,
        }] = nodes
        else {
            return None;
        };
        if is_question(key) {
            return Some(UninluTask::Mrc);
        }
        return LABEL_TASKS
            .iter()
            .find(|(name, _)| name == key)
            .map(|&(_, task)| task);
    }
    if nodes.iter().all(|n| n.children.is_none()) {
        return unanimous(
            nodes,
            |n| is_question(&n.key),
            UninluTask::Mrc,
            UninluTask::Ner,
        );
    }
    if schema.depth() != 2 || nodes.iter().any(|n| n.children.is_none()) {
        return None;
    }
    if is_attribute_sentiment(nodes) {
        return Some(UninluTask::Sentiment);
    }
    unanimous(
        nodes,
        |n| n.key.contains(TRIGGER),
        UninluTask::Event,
        UninluTask::Relation,
    )
}

/// `all` when every node passes `test`, `none` when none does; `None` for a mix of two tasks.
fn unanimous(
    nodes: &[SchemaNode],
    test: impl Fn(&SchemaNode) -> bool,
    all: UninluTask,
    none: UninluTask,
) -> Option<UninluTask> {
    match nodes.iter().filter(|n| test(n)).count() {
        0 => Some(none),
        passing if passing == nodes.len() => Some(all),
        _ => None,
    }
}

fn is_question(key: &str) -> bool {
    key.trim_end().ends_with(['?', '？'])
}

/// The attribute sentiment schema of the model card, `{"属性词": {"情感词": null}}`.
fn is_attribute_sentiment(nodes: &[SchemaNode]) -> bool {
    matches!(nodes, [SchemaNode { key, children: Some(sub) }]
        if key == "属性词"
            && matches!(sub.nodes.as_slice(), [SchemaNode { key, children: None }] if key == "情感词"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uninlu::{Limits, Presets};
    use serde_json::{json, Value};

    fn task(text: &str, schema: Value) -> Option<UninluTask> {
        task_of(text, &Schema::parse(&schema, &Limits::default()).unwrap())
    }

    #[test]
    fn each_task_is_told_from_its_schema_and_text_format() {
        use UninluTask::*;
        let text = "1月22日，在北京举行的比赛中，中国队战胜了日本队。";
        for (text, schema, expected) in [
            (
                text,
                json!({"人物": null, "地理位置": null, "组织机构": null}),
                Ner,
            ),
            (
                text,
                json!({"人物": {"比赛项目(赛事名称)": null, "参赛地点(城市)": null}}),
                Relation,
            ),
            (
                text,
                json!({"人物": {"国籍": null}, "组织机构": {"成立时间": null}}),
                Relation,
            ),
            (
                text,
                json!({"胜负(事件触发词)": {"时间": null, "败者": null, "胜者": null}}),
                Event,
            ),
            (
                text,
                json!({"胜负(事件触发词)": {"胜者": null}, "举办(事件触发词)": {"地点": null}}),
                Event,
            ),
            (
                "#很满意，音质很好",
                json!({"属性词": {"情感词": null}}),
                Sentiment,
            ),
            // Attribute sentiment's keys, but not its exact schema: a relation schema.
            (
                "#很满意，音质很好",
                json!({"属性词": {"情感词": null, "程度": null}}),
                Relation,
            ),
            ("正向,负向|很好看", json!({"情感分类": null}), Sentiment),
            (
                "体育,财经|中国队夺冠",
                json!({"分类": null}),
                Classification,
            ),
            (
                "相似,不相似|今天天气好&今天天气不错",
                json!({"文本匹配": null}),
                Match,
            ),
            (
                "蕴含,矛盾,中立|段落1：下雨了；段落2：地是湿的",
                json!({"段落2和段落1的关系是：": null}),
                Nli,
            ),
            (
                "谷爱凌在北京冬奥会获得了金牌。",
                json!({"谷爱凌获得了什么奖牌？": null}),
                Mrc,
            ),
            ("段落", json!({"谁赢了?": null, "在哪里？ ": null}), Mrc),
            (
                "金牌,银牌|谷爱凌在北京冬奥会获得了金牌。",
                json!({"谷爱凌获得了什么奖牌？": null}),
                Mrc,
            ),
            // A JSON string schema is the same schema.
            (text, json!("{\"人物\": null}"), Ner),
        ] {
            assert_eq!(
                task(text, schema.clone()),
                Some(expected),
                "{text} {schema}"
            );
        }
    }

    #[test]
    fn what_the_rule_cannot_tell_needs_the_broad_scope() {
        let text = "中国队战胜了日本队。";
        for (text, schema) in [
            // Entities and relations at once.
            (text, json!({"人物": {"国籍": null}, "地理位置": null})),
            // Events and relations at once.
            (
                text,
                json!({"胜负(事件触发词)": {"胜者": null}, "人物": {"国籍": null}}),
            ),
            // Entity types and questions at once.
            (text, json!({"人物": null, "谁赢了？": null})),
            // Three levels.
            (
                text,
                json!({"人物": {"配偶(人物)": {"出生地(地点)": null}}}),
            ),
            // A label list under a key that names no task, several keys, or a nested schema.
            ("正向,负向|很好看", json!({"情感": null})),
            ("正向,负向|很好看", json!({"情感分类": null, "分类": null})),
            ("正向,负向|很好看", json!({"情感分类": {"原因": null}})),
            // A `|` in the text is a label list to the pipeline, whatever the schema.
            ("A|B公司", json!({"组织机构": null})),
        ] {
            assert_eq!(task(text, schema.clone()), None, "{text} {schema}");
        }
    }

    #[test]
    fn the_built_in_task_types_express_the_task_they_name() {
        let presets = Presets::builtin();
        for (task_type, expected) in [
            ("ner", UninluTask::Ner),
            ("relation", UninluTask::Relation),
            ("event", UninluTask::Event),
            ("attribute_sentiment", UninluTask::Sentiment),
            ("sentiment", UninluTask::Sentiment),
            ("classification", UninluTask::Classification),
            ("text_matching", UninluTask::Match),
            ("nli", UninluTask::Nli),
        ] {
            assert_eq!(presets.task(task_type), Some(expected), "{task_type}");
            let (text, schema) = presets.request(task_type, "文本", None).unwrap();
            assert_eq!(task(&text, schema), Some(expected), "{task_type}");
        }
        assert_eq!(presets.task("reading_comprehension"), None);
        assert_eq!(presets.task("summarize"), None);
    }
}
