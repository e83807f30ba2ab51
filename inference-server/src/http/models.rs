//! OpenAI's model list (`GET /v1/models`, `GET /v1/models/{id}`): the one model this server runs,
//! for the clients (and LangChain, LlamaIndex, Open WebUI on top of them) that discover models
//! before they call. Open like `/info`: it says no more than `/info` does.

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::router::AppState;
use crate::error::Error;
use nlu_crds::routes::Route;

/// One model in OpenAI's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct Model {
    /// The served model name (as `/info` and the embedding responses name it).
    pub id: String,
    /// Always `model`.
    #[schema(value_type = String)]
    pub object: &'static str,
    /// When this server started, in Unix seconds.
    pub created: u64,
    /// Always `nlu-server`.
    #[schema(value_type = String)]
    pub owned_by: &'static str,
}

/// The model list in OpenAI's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    #[schema(value_type = String)]
    pub object: &'static str,
    pub data: Vec<Model>,
}

fn served(state: &AppState) -> Result<Model, Error> {
    Ok(Model {
        id: state.engine()?.info().model.clone(),
        object: "model",
        created: state.started,
        owned_by: "nlu-server",
    })
}

/// The models this server runs (one), in OpenAI's shape.
#[utoipa::path(get, path = Route::OpenAiModels.openapi_path(), tag = "models",
    responses(
        (status = 200, description = "The served model", body = ModelList),
        (status = 503, description = "The model is still loading", body = super::errors::ErrorBody)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<ModelList>, Error> {
    Ok(Json(ModelList {
        object: "list",
        data: vec![served(&state)?],
    }))
}

/// One model by its id (which may contain `/`, as hub ids do).
#[utoipa::path(get, path = Route::OpenAiModel.openapi_path(), tag = "models",
    params(("id" = String, Path, description = "The model's id, as the list names it")),
    responses(
        (status = 200, description = "The served model", body = Model),
        (status = 404, description = "This server runs no model of that id", body = super::errors::ErrorBody),
        (status = 503, description = "The model is still loading", body = super::errors::ErrorBody)))]
pub async fn retrieve(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Model>, Error> {
    let model = served(&state)?;
    if id != model.id {
        return Err(Error::new(
            crate::error::Kind::NotFound,
            "model_not_found",
            format!("this server runs the model `{}`, not `{id}`", model.id),
        ));
    }
    Ok(Json(model))
}
