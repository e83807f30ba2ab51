//! UniNLU schemas: a JSON object (or a JSON string holding one) whose keys are the types to
//! extract, in order; `null` marks a leaf, an object nests the types to extract for each span found.

use serde_json::Value;

use super::{Limits, PredictError};

/// One level of a schema, keys in request order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    pub nodes: Vec<SchemaNode>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaNode {
    pub key: String,
    /// `None` for a leaf (`null` in JSON).
    pub children: Option<Schema>,
}

impl Schema {
    /// Parses and checks a request's schema against the depth and key limits.
    pub fn parse(value: &Value, limits: &Limits) -> Result<Self, PredictError> {
        let parsed;
        let value = match value {
            Value::String(text) => {
                parsed = serde_json::from_str::<Value>(text).map_err(|e| {
                    PredictError::InvalidSchema(format!("schema string is not JSON: {e}"))
                })?;
                &parsed
            }
            other => other,
        };
        let schema = Self::level(value, "the schema")?;
        let depth = schema.depth();
        if depth > limits.max_schema_depth {
            return Err(PredictError::SchemaTooDeep {
                depth,
                limit: limits.max_schema_depth,
            });
        }
        let keys = schema.key_count();
        if keys > limits.max_schema_keys {
            return Err(PredictError::TooManyKeys {
                keys,
                limit: limits.max_schema_keys,
            });
        }
        Ok(schema)
    }

    fn level(value: &Value, what: &str) -> Result<Self, PredictError> {
        let Value::Object(map) = value else {
            return Err(PredictError::InvalidSchema(format!(
                "{what} must be a JSON object"
            )));
        };
        if map.is_empty() {
            return Err(PredictError::InvalidSchema(format!(
                "{what} is an empty object"
            )));
        }
        let nodes = map
            .iter()
            .map(|(key, child)| {
                let children = match child {
                    Value::Null => None,
                    Value::Object(_) => Some(Self::level(child, &format!("the value of {key:?}"))?),
                    _ => {
                        return Err(PredictError::InvalidSchema(format!(
                            "the value of {key:?} must be null or an object"
                        )))
                    }
                };
                Ok(SchemaNode {
                    key: key.clone(),
                    children,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { nodes })
    }

    /// Levels, counting this one.
    pub fn depth(&self) -> usize {
        1 + self
            .nodes
            .iter()
            .filter_map(|n| n.children.as_ref().map(Schema::depth))
            .max()
            .unwrap_or(0)
    }

    /// Keys of all levels.
    pub fn key_count(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| 1 + n.children.as_ref().map_or(0, Schema::key_count))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn leaf(key: &str) -> SchemaNode {
        SchemaNode {
            key: key.into(),
            children: None,
        }
    }

    #[test]
    fn keeps_key_order_and_nesting() {
        let v = json!({"人物": {"比赛项目": null, "参赛地点": null}, "组织": null, "B": null, "A": null});
        let s = Schema::parse(&v, &Limits::default()).unwrap();
        let keys: Vec<_> = s.nodes.iter().map(|n| n.key.as_str()).collect();
        assert_eq!(keys, ["人物", "组织", "B", "A"]);
        assert_eq!(
            s.nodes[0].children,
            Some(Schema {
                nodes: vec![leaf("比赛项目"), leaf("参赛地点")]
            })
        );
        assert_eq!((s.depth(), s.key_count()), (2, 6));
    }

    #[test]
    fn accepts_a_json_string() {
        let from_str = Schema::parse(
            &json!("{\"z\": null, \"a\": {\"b\": null}}"),
            &Limits::default(),
        );
        let from_obj = Schema::parse(&json!({"z": null, "a": {"b": null}}), &Limits::default());
        assert_eq!(from_str.unwrap(), from_obj.unwrap());
    }

    #[test]
    fn rejects_malformed_schemas() {
        for bad in [
            json!({"a": {}}),
            json!({}),
            json!([]),
            json!("not json"),
            json!("[1]"),
            json!({"a": 1}),
            json!({"a": "x"}),
            json!({"a": {"b": {}}}),
            json!(null),
        ] {
            let err = Schema::parse(&bad, &Limits::default()).unwrap_err();
            assert!(
                matches!(err, PredictError::InvalidSchema(_)),
                "{bad}: {err:?}"
            );
            assert_eq!(
                crate::error::Error::from(err).kind,
                crate::error::Kind::Invalid
            );
        }
    }

    #[test]
    fn enforces_depth_and_key_limits() {
        let limits = Limits {
            max_schema_depth: 2,
            max_schema_keys: 3,
            ..Limits::default()
        };
        let deep = json!({"a": {"b": {"c": null}}});
        assert!(matches!(
            Schema::parse(&deep, &limits),
            Err(PredictError::SchemaTooDeep { depth: 3, limit: 2 })
        ));
        let wide = json!({"a": {"b": null, "c": null}, "d": null});
        assert!(matches!(
            Schema::parse(&wide, &limits),
            Err(PredictError::TooManyKeys { keys: 4, limit: 3 })
        ));
        assert!(Schema::parse(&json!({"a": {"b": null}, "c": null}), &limits).is_ok());
    }
}
