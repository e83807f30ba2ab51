//! The task types of the second seed's app, which its clients call as `POST /predict
//! {"task_type", "input_text"}`: each names a UniNLU schema and, for classification-like tasks,
//! the labels the pipeline reads before `|` in the text (spec/uninlu.md, "Task formats"). The
//! built-in set follows the model card's examples; `--task-presets` replaces or adds entries.
//! A built-in task type also names the UniNLU task its requests run, for the per-task scopes.

use std::collections::BTreeMap;

use nlu_crds::access::UninluTask;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Limits, Schema};

/// One task type.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// The UniNLU schema; `None`: the request must bring one (reading comprehension, whose
    /// schema is the question).
    #[serde(default)]
    pub schema: Option<Value>,
    /// Labels put before the text as `label1,label2|text`; empty for extraction tasks.
    #[serde(default)]
    pub labels: Vec<String>,
    /// The task a request runs with this schema (the scope `predict:<task>` it needs): set for
    /// the built-in task types that have a schema. `None` (every `--task-presets` entry): the
    /// task is told from the text and schema, as for `/api/predict` ([`super::task_of`]).
    #[serde(skip)]
    pub task: Option<UninluTask>,
}

/// The task types a server answers, by name.
#[derive(Clone, Debug, PartialEq)]
pub struct Presets(BTreeMap<String, Preset>);

/// Why a task type cannot be run.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PresetError {
    #[error("unknown task_type {0:?}; this server knows {1}")]
    Unknown(String, String),
    #[error("task_type {0:?} has no built-in schema: send a \"schema\", e.g. {{\"谷爱凌获得了什么奖牌？\": null}}")]
    NeedsSchema(String),
}

fn preset(task: UninluTask, schema: Value, labels: &[&str]) -> Preset {
    Preset {
        schema: Some(schema),
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        task: Some(task),
    }
}

impl Presets {
    /// The built-in task types.
    pub fn builtin() -> Self {
        let presets = [
            (
                "ner",
                preset(
                    UninluTask::Ner,
                    json!({"人物": null, "地理位置": null, "组织机构": null}),
                    &[],
                ),
            ),
            (
                "relation",
                preset(
                    UninluTask::Relation,
                    json!({"人物": {"比赛项目(赛事名称)": null, "参赛地点(城市)": null, "获奖时间(时间)": null}}),
                    &[],
                ),
            ),
            (
                "event",
                preset(
                    UninluTask::Event,
                    json!({"胜负(事件触发词)": {"时间": null, "败者": null, "胜者": null, "赛事名称": null}}),
                    &[],
                ),
            ),
            (
                "attribute_sentiment",
                preset(
                    UninluTask::Sentiment,
                    json!({"属性词": {"情感词": null}}),
                    &[],
                ),
            ),
            (
                "sentiment",
                preset(
                    UninluTask::Sentiment,
                    json!({"情感分类": null}),
                    &["正向", "负向"],
                ),
            ),
            (
                "classification",
                preset(
                    UninluTask::Classification,
                    json!({"分类": null}),
                    &[
                        "故事", "文化", "娱乐", "体育", "财经", "房产", "汽车", "教育", "科技",
                        "军事", "旅游", "国际", "证券", "农业", "电竞", "民生",
                    ],
                ),
            ),
            (
                "text_matching",
                preset(
                    UninluTask::Match,
                    json!({"文本匹配": null}),
                    &["相似", "不相似"],
                ),
            ),
            (
                "nli",
                preset(
                    UninluTask::Nli,
                    json!({"段落2和段落1的关系是：": null}),
                    &["蕴含", "矛盾", "中立"],
                ),
            ),
            (
                "reading_comprehension",
                Preset {
                    schema: None,
                    labels: Vec::new(),
                    task: None,
                },
            ),
        ];
        Presets(
            presets
                .into_iter()
                .map(|(n, p)| (n.to_owned(), p))
                .collect(),
        )
    }

    /// The built-in set with the entries of a `--task-presets` file (a JSON object of task
    /// type -> `{"schema"?, "labels"?}`) replacing or adding to it. Each schema is checked
    /// against `limits` here, so a bad file stops the server at start, not a request later.
    pub fn with_file(text: &str, limits: &Limits) -> Result<Self, String> {
        let file: BTreeMap<String, Preset> =
            serde_json::from_str(text).map_err(|e| format!("not a task-type object: {e}"))?;
        let mut presets = Self::builtin();
        for (name, preset) in file {
            if name.trim().is_empty() {
                return Err("a task type name is empty".into());
            }
            if let Some(label) = preset
                .labels
                .iter()
                .find(|l| l.trim().is_empty() || l.contains([',', '|']))
            {
                return Err(format!(
                    "{name}: label {label:?} is empty or holds ',' or '|', which separate labels and text"
                ));
            }
            if let Some(schema) = &preset.schema {
                Schema::parse(schema, limits).map_err(|e| format!("{name}: {e}"))?;
            }
            presets.0.insert(name, preset);
        }
        Ok(presets)
    }

    /// The task a request of `task_type` runs when it uses the task type's own schema (see
    /// [`Preset::task`]); `None` for unknown task types.
    pub fn task(&self, task_type: &str) -> Option<UninluTask> {
        self.0.get(task_type)?.task
    }

    /// Pure: the pipeline's text and schema for `input_text` under `task_type`; `schema`
    /// (from the request) replaces the preset's.
    pub fn request(
        &self,
        task_type: &str,
        input_text: &str,
        schema: Option<Value>,
    ) -> Result<(String, Value), PresetError> {
        let preset = self.0.get(task_type).ok_or_else(|| {
            let known: Vec<&str> = self.0.keys().map(String::as_str).collect();
            PresetError::Unknown(task_type.to_owned(), known.join(", "))
        })?;
        let schema = schema
            .or_else(|| preset.schema.clone())
            .ok_or_else(|| PresetError::NeedsSchema(task_type.to_owned()))?;
        let text = match preset.labels.as_slice() {
            [] => input_text.to_owned(),
            labels => format!("{}|{input_text}", labels.join(",")),
        };
        Ok((text, schema))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_types_give_the_pipeline_input() {
        let presets = Presets::builtin();
        let (text, schema) = presets.request("ner", "北京", None).unwrap();
        assert_eq!(text, "北京");
        assert_eq!(
            schema,
            json!({"人物": null, "地理位置": null, "组织机构": null})
        );
        // Key order is the schema's meaning: kept as written.
        let keys: Vec<&String> = schema.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["人物", "地理位置", "组织机构"]);
        let (text, schema) = presets.request("sentiment", "很好", None).unwrap();
        assert_eq!(text, "正向,负向|很好");
        assert_eq!(schema, json!({"情感分类": null}));
        let (_, schema) = presets
            .request("ner", "x", Some(json!({"时间": null})))
            .unwrap();
        assert_eq!(schema, json!({"时间": null}));
    }

    #[test]
    fn unknown_and_schemaless_task_types_say_what_to_send() {
        let presets = Presets::builtin();
        let e = presets.request("summarize", "x", None).unwrap_err();
        let message = e.to_string();
        assert!(message.contains("\"summarize\""), "{message}");
        assert!(
            message.contains("classification, event, ner, nli"),
            "{message}"
        );
        assert!(matches!(
            presets.request("reading_comprehension", "x", None),
            Err(PresetError::NeedsSchema(_))
        ));
        let (text, schema) = presets
            .request("reading_comprehension", "段落", Some(json!({"问题": null})))
            .unwrap();
        assert_eq!((text.as_str(), schema), ("段落", json!({"问题": null})));
    }

    #[test]
    fn a_file_replaces_and_adds_entries_and_is_checked() {
        let limits = Limits::DEFAULT;
        let presets = Presets::with_file(
            r#"{"sentiment": {"schema": {"情感": null}, "labels": ["好", "坏"]},
                "topic": {"schema": {"主题": null}, "labels": ["体育", "财经"]}}"#,
            &limits,
        )
        .unwrap();
        assert_eq!(
            presets.request("sentiment", "t", None).unwrap(),
            ("好,坏|t".to_owned(), json!({"情感": null}))
        );
        assert_eq!(
            presets.request("topic", "t", None).unwrap().0,
            "体育,财经|t"
        );
        assert!(presets.request("ner", "t", None).is_ok(), "built-ins stay");
        for (bad, why) in [
            (r#"["ner"]"#, "not a task-type object"),
            (r#"{"x": {"schema": {}}}"#, "x: invalid schema"),
            (r#"{"x": {"labels": ["a,b"]}}"#, "holds ','"),
            (
                r#"{"x": {"schema": {"a": null}, "extra": 1}}"#,
                "unknown field",
            ),
        ] {
            let e = Presets::with_file(bad, &limits).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
