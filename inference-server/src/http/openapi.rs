//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers' `#[utoipa::path]`
//! annotations and the request/response types, served at `GET /openapi.json`. A committed copy
//! lives in `docs/openapi.json` (kept in sync by `tests/contract.rs`).

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::header::Header;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use nlu_crds::routes::Route;

use super::errors::ErrorBody;
use super::handlers;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "nlu-server",
        description = "CPU inference server for SiameseUniNLU (span extraction guided by a schema), \
                       sentence embeddings and reranking (cross-encoders). Every error answer is `{\"error\": {\"code\", \"message\"}}`. \
                       With `--auth jwt` the model routes need a tenant token (`Authorization: Bearer`); \
                       probes, metrics, the model list and this document never do."
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "uninlu", description = "SiameseUniNLU (servers started with --task uninlu)"),
        (name = "embedding", description = "Sentence embeddings (servers started with --task embedding)"),
        (name = "rerank", description = "Reranking with a cross-encoder (servers started with --task rerank)"),
        (name = "models", description = "OpenAI's model list (every server): the one model it runs"),
        (name = "probes", description = "Health, readiness, metrics and model info; never need a token"),
        (name = "meta", description = "This document and the playground page"),
    )
)]
pub struct ApiDoc;

/// The whole document: [`ApiDoc`]'s frame with the operations of the handler table.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(handlers::Paths::openapi());
    ModelHeaders.modify(&mut doc);
    doc
}

/// The document as pretty JSON (what `/openapi.json` serves and `docs/openapi.json` holds).
pub fn json() -> String {
    document()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
}

static JSON: LazyLock<String> = LazyLock::new(json);

/// This document.
#[utoipa::path(get, path = Route::OpenApi.openapi_path(), tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object, content_type = "application/json")))]
pub async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], JSON.as_str())
}

/// The errors every model route may answer.
#[derive(IntoResponses)]
pub enum ModelErrors {
    /// Not JSON, wrong field types, unknown fields, empty input, invalid schema.
    #[response(status = 400, description = "The request is malformed")]
    BadRequest(ErrorBody),
    /// `www-authenticate: Bearer` comes with it.
    #[response(
        status = 401,
        description = "Auth on: the token is missing, invalid, expired or revoked"
    )]
    Unauthorized(ErrorBody),
    #[response(
        status = 403,
        description = "Auth on: the tenant is disabled, or may not use this service, operation or (UniNLU) task"
    )]
    Forbidden(ErrorBody),
    #[response(
        status = 404,
        description = "This server runs another task (see /info)"
    )]
    NotFound(ErrorBody),
    #[response(
        status = 408,
        description = "The body did not arrive within the server's --body-read-timeout"
    )]
    Timeout(ErrorBody),
    #[response(
        status = 413,
        description = "The body or an input is longer than the server's limits, or (`request_too_costly`) the request's cost in token positions exceeds --max-request-cost"
    )]
    TooLarge(ErrorBody),
    #[response(
        status = 422,
        description = "UniNLU: the schema or text exceeds a limit (depth, keys, prompts, windows)"
    )]
    Unprocessable(ErrorBody),
    #[response(
        status = 429,
        description = "Auth on: the tenant's daily or per-minute quota (requests or tokens) is used up, or (`too_many_in_flight`) it has maxConcurrentRequests in flight; see retry-after"
    )]
    TooMany(ErrorBody),
    #[response(
        status = 503,
        description = "Loading, overloaded, shutting down, or (auth on, fail-closed) Redis unreachable; see retry-after"
    )]
    Unavailable(ErrorBody),
    #[response(
        status = 504,
        description = "`request_timeout`: the request took longer than the server's --request-timeout"
    )]
    GatewayTimeout(ErrorBody),
}

/// Headers of the model routes' answers, each declared once as a component.
const MODEL_HEADERS: [(&str, &str); 7] = [
    (
        "X-Request-Cost",
        "Token positions the encoder ran for this request (what token quotas charge)",
    ),
    (
        "X-RateLimit-Limit",
        "Auth on: the tenant's request limit closest to exhaustion (per day or per minute)",
    ),
    (
        "X-RateLimit-Remaining",
        "Auth on: requests left under that limit",
    ),
    (
        "X-RateLimit-Reset",
        "Auth on: seconds until that limit resets",
    ),
    (
        "X-RateLimit-Limit-Tokens",
        "Auth on: the tenant's token limit closest to exhaustion",
    ),
    (
        "X-RateLimit-Remaining-Tokens",
        "Auth on: token positions left under that limit",
    ),
    (
        "X-RateLimit-Reset-Tokens",
        "Auth on: seconds until that limit resets",
    ),
];

/// Adds [`MODEL_HEADERS`] (rate limits only, on refusals) to the answers of every model route of
/// the route table, with `Retry-After` on 429 and 503. Runs on the whole [`document`], after the
/// operations are in.
struct ModelHeaders;

impl Modify for ModelHeaders {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let integer = || {
            Header::new(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, description) in MODEL_HEADERS
            .into_iter()
            .chain([("Retry-After", "Seconds after which a retry may succeed")])
        {
            let mut header = integer();
            header.description = Some(description.to_owned());
            components.headers.insert(name.to_owned(), header.into());
        }
        let reference = |name: &str| RefOr::Ref(Ref::new(format!("#/components/headers/{name}")));
        for route in Route::ALL.into_iter().filter(|r| r.scope().is_some()) {
            let Some(op) = openapi
                .paths
                .paths
                .get_mut(&route.openapi_path())
                .and_then(|p| p.post.as_mut())
            else {
                continue;
            };
            for (status, response) in op.responses.responses.iter_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                let names = match status.as_str() {
                    "200" => &MODEL_HEADERS[..],
                    "429" => &MODEL_HEADERS[1..],
                    _ => &[],
                };
                for (name, _) in names {
                    response.headers.insert((*name).to_owned(), reference(name));
                }
                if matches!(status.as_str(), "429" | "503") {
                    response
                        .headers
                        .insert("Retry-After".to_owned(), reference("Retry-After"));
                }
            }
        }
    }
}

/// A probe's answer, e.g. `{"status": "ready"}`.
#[derive(ToSchema)]
pub struct Status {
    pub status: String,
}

/// A UniNLU schema: an object whose keys are types and whose values are `null` (a leaf) or a
/// nested schema, or a string holding that JSON. Key order is significant.
pub fn uninlu_schema() -> impl Into<RefOr<Schema>> {
    let level = ObjectBuilder::new()
        .schema_type(Type::Object)
        .min_properties(Some(1))
        .description(Some(
            "keys are types; values are null (leaf) or a nested schema",
        ));
    let nested =
        ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::Object, Type::Null]));
    OneOfBuilder::new()
        .item(level.additional_properties(Some(AdditionalProperties::from(nested))))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("the same schema as a JSON string")),
        )
        .description(Some(
            "The schema: an object whose keys are types and whose values are null (a leaf) or a \
             nested schema, or a string holding that JSON. Key order is significant.",
        ))
        .examples([serde_json::json!({"人物": null, "地理位置": null, "组织机构": null})])
}

/// [`uninlu_schema`] or `null` (an optional one, where `null` means none).
pub fn optional_uninlu_schema() -> impl Into<RefOr<Schema>> {
    OneOfBuilder::new()
        .item(uninlu_schema())
        .item(ObjectBuilder::new().schema_type(Type::Null))
}

/// One input text: not empty, not only whitespace (the server answers 400 `empty_input`).
pub fn text() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .pattern(Some(r"\S"))
}

/// A non-empty list of texts.
pub fn texts() -> ArrayBuilder {
    ArrayBuilder::new().items(text()).min_items(Some(1))
}

/// Embedding inputs: one text or a non-empty list of them.
pub fn inputs() -> impl Into<RefOr<Schema>> {
    OneOfBuilder::new()
        .item(text())
        .item(texts())
        .description(Some(
            "a string or a non-empty array of strings; none empty or only whitespace",
        ))
}

/// The `bearer` scheme the model routes accept when the server runs `--auth jwt`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi.components.get_or_insert_with(Default::default).add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "Tenant token (EdDSA JWT) from the operator or `nlu-server token`; required \
                         when the server runs --auth jwt",
                    ))
                    .build(),
            ),
        );
    }
}
