//! Odd input never panics: it gives a prediction or a typed error with the right status.

use nlu_server::model::{Dtype, Embedder, ModelFiles, UniNluModel};
use nlu_server::error::Error;
use nlu_server::http::errors;
use nlu_server::uninlu::{predict, Limits, PredictError};

/// The HTTP status a client gets for `err`.
fn status(err: PredictError) -> u16 {
    errors::status(Error::from(err).kind).as_u16()
}
use serde_json::json;

use super::common::fixtures;

fn model() -> UniNluModel {
    UniNluModel::load(
        &ModelFiles::from_dir(&fixtures().join("uninlu-tiny/model")).unwrap(),
        Dtype::F32,
    )
    .unwrap()
}

#[test]
fn odd_texts_give_predictions() {
    let model = model();
    let schema = json!({"人物": {"时间": null}, "地点": null});
    let long_key = "键".repeat(500);
    for text in [
        "",
        " ",
        "😀😀😀",
        "\u{0}\u{fffd}\t\n",
        "[MASK] [SEP] [CLS]",
        "ＡＢＣ|",
        "|",
        "a,b|",
        "e\u{301}",
    ] {
        let p = predict(&model, text, &schema, &Limits::default()).unwrap();
        for chain in &p.output {
            for item in chain {
                assert!(
                    item.offset[0] <= text.chars().count()
                        && item.offset[1] <= text.chars().count()
                );
            }
        }
    }
    // A huge key is truncated to 128 prompt tokens instead of overflowing the positions.
    let p = predict(
        &model,
        "谷爱凌在北京",
        &json!({ long_key: null }),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(p.prompts, 1);
}

#[test]
fn limits_give_typed_errors() {
    let model = model();
    let schema = json!({"人物": null});
    let text = "北京冬奥会期间，谷爱凌获得金牌。".repeat(100);
    let tight = Limits {
        max_text_chars: 100,
        ..Limits::default()
    };
    let err = predict(&model, &text, &schema, &tight).unwrap_err();
    assert!(
        matches!(
            err,
            PredictError::TextTooLong {
                chars: 1600,
                limit: 100
            }
        ),
        "{err}"
    );
    assert_eq!(status(err), 413);

    let one_window = Limits {
        max_windows: 1,
        ..Limits::default()
    };
    let err = predict(&model, &text, &schema, &one_window).unwrap_err();
    assert!(
        matches!(
            err,
            PredictError::TooManyWindows {
                windows: 5,
                limit: 1
            }
        ),
        "{err}"
    );
    assert_eq!(status(err), 413);

    // The random tiny model finds many spans, so the nested level overflows a small budget
    // after the first level ran.
    let nested = json!({"人物": {"时间": null, "地点": null}});
    let few = Limits {
        max_prompts: 2,
        ..Limits::default()
    };
    let err = predict(
        &model,
        "1944年毕业于北大的名古屋铁道会长谷口清太郎等人在日本积极筹资",
        &nested,
        &few,
    )
    .unwrap_err();
    assert!(
        matches!(err, PredictError::TooManyPrompts { limit: 2 }),
        "{err}"
    );
    assert_eq!(status(err), 422);

    let err = predict(&model, "x", &json!({"a": {}}), &Limits::default()).unwrap_err();
    assert_eq!(status(err), 400);
}

#[test]
fn embedder_rejects_bad_sequences() {
    let embedder = Embedder::load(
        &ModelFiles::from_dir(&fixtures().join("gte-tiny/model")).unwrap(),
        None,
        Dtype::F32,
    )
    .unwrap();
    assert!(embedder.embed(&[], true).unwrap().is_empty());
    assert!(embedder.embed(&[vec![]], true).is_err());
    assert!(embedder.embed(&[vec![101; 513]], true).is_err());
    assert!(embedder.embed(&[vec![101, 999_999, 102]], true).is_err());
    let text = "很长的文本".repeat(400);
    let ids = embedder.tokenizer().encode(&text, Some(512)).unwrap().ids;
    assert_eq!(ids.len(), 512);
    assert_eq!(embedder.embed(&[ids], true).unwrap()[0].len(), 64);
}
