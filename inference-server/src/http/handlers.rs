//! The handler of each route of the route table (`nlu_crds::routes`): the one place a route meets
//! its code. The router serves each under the table's path and method, and the OpenAPI document
//! lists the documented ones' `#[utoipa::path]`, which read their paths from the same table. A
//! route without a handler here does not compile.

use axum::routing::{on, MethodFilter, MethodRouter};
use nlu_crds::routes::{Method, Route};

use super::router::AppState;
use super::{embeddings, health, models, openapi, playground, predict, rerank, tokens};

/// Declares [`handler`] and [`Paths`] from one line per route.
macro_rules! handlers {
    (
        documented { $($route:ident => $module:ident::$function:ident,)* }
        undocumented { $($plain:ident => $plain_module:ident::$plain_function:ident,)* }
    ) => {
        /// The handler of `route`, under the table's method.
        pub fn handler(route: Route) -> MethodRouter<AppState> {
            let method = match route.method() {
                Method::Get => MethodFilter::GET,
                Method::Post => MethodFilter::POST,
            };
            match route {
                $(Route::$route => on(method, $module::$function),)*
                $(Route::$plain => on(method, $plain_module::$plain_function),)*
            }
        }

        /// The documented routes' operations, for the OpenAPI document.
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($($module::$function),*))]
        pub struct Paths;

        /// The routes the OpenAPI document describes.
        pub const DOCUMENTED: &[Route] = &[$(Route::$route),*];
    };
}

handlers! {
    documented {
        OpenAiEmbeddings => embeddings::openai,
        Embed => embeddings::tei,
        EmbedSparse => embeddings::sparse,
        EmbedColbert => embeddings::colbert,
        Similarity => embeddings::similarity,
        Tokenize => tokens::tokenize,
        Decode => tokens::decode,
        Rerank => rerank::rerank,
        CohereRerank => rerank::cohere_rerank,
        Predict => predict::predict,
        TaskPredict => predict::task,
        OpenAiModels => models::list,
        OpenAiModel => models::retrieve,
        Healthz => health::healthz,
        Readyz => health::readyz,
        Health => health::health,
        Info => health::info,
        OpenApi => openapi::openapi_json,
        Metrics => health::metrics,
        Playground => playground::index,
    }
    undocumented {
        // Files the page loads, not API.
        PlaygroundScript => playground::script,
        PlaygroundStyle => playground::style,
    }
}
