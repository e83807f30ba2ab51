//! Every HTTP route of `nlu-server`, declared once in [`route_table!`] below: path, method, kind
//! (which decides auth scope, quotas, deadline and load) and exposure. The server builds its
//! router, its auth scope check, its metrics labels and the OpenAPI paths from this table; the
//! operator publishes through the Ingress only the routes it marks public. Adding a route is one
//! line here; the server's handler table (`http/handlers.rs`), a `match` over [`Route`], then
//! fails to compile until the route has its handler.

use crate::access::Scope;
use crate::serve::Task;

/// The HTTP method a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// What a route is for, which decides where the server serves it and who may call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A tenant operation of a server of this task: needs this scope under `--auth jwt`, is
    /// charged against quotas, runs under `--request-timeout` and counts as load for the
    /// autoscaler.
    Model(Scope, Task),
    /// Open to anyone, never charged: probes, the API document, model discovery.
    Open,
    /// The playground page and its files: served unless `--no-playground`.
    Playground,
    /// `/metrics`: on `--metrics-listen` when given, else on the API listener.
    Metrics,
}

/// Whether the Ingress publishes a route (everything else stays inside the cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Public {
    Always,
    /// Only while the playground is on: the page and what it loads.
    WithPlayground,
    Never,
}

/// One route's facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Facts {
    /// Axum's syntax: a segment `{name}` matches any one segment, a last `{*name}` the rest.
    path: &'static str,
    method: Method,
    kind: Kind,
    public: Public,
}

/// Declares [`Route`], `Route::ALL` and each route's [`Facts`] from one line per route.
macro_rules! route_table {
    ($($(#[$doc:meta])* $route:ident => $path:literal, $method:ident, $kind:expr, $public:ident;)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Route {
            $($(#[$doc])* $route,)*
        }

        impl Route {
            pub const ALL: [Route; [$(stringify!($route)),*].len()] = [$(Route::$route),*];

            const fn facts(self) -> Facts {
                match self {
                    $(Route::$route => Facts {
                        path: $path,
                        method: Method::$method,
                        kind: $kind,
                        public: Public::$public,
                    },)*
                }
            }
        }
    };
}

use Kind::{Model, Open, Playground};
use Scope::{Embed, Predict, Rerank};
use Task::{Embedding, Uninlu};

route_table! {
    OpenAiEmbeddings => "/v1/embeddings", Post, Model(Embed, Embedding), Always;
    Embed => "/embed", Post, Model(Embed, Embedding), Always;
    /// bge-m3's lexical weights, text-embeddings-inference's shape: `[[{"index", "value"}]]`.
    EmbedSparse => "/embed_sparse", Post, Model(Embed, Embedding), Always;
    /// bge-m3's multi-vector (ColBERT) output: one vector per token after the first.
    EmbedColbert => "/embed_colbert", Post, Model(Embed, Embedding), Always;
    Similarity => "/similarity", Post, Model(Embed, Embedding), Always;
    Tokenize => "/tokenize", Post, Model(Embed, Embedding), Always;
    Decode => "/decode", Post, Model(Embed, Embedding), Always;
    /// text-embeddings-inference's rerank: `{"query", "texts"}` -> `[{"index", "score"}]`.
    Rerank => "/rerank", Post, Model(Rerank, Task::Rerank), Always;
    /// Cohere's and Jina's rerank: `{"query", "documents", "top_n"}` -> `{"results"}`.
    CohereRerank => "/v1/rerank", Post, Model(Rerank, Task::Rerank), Always;
    Predict => "/api/predict", Post, Model(Predict, Uninlu), Always;
    /// The second seed app's API: `{"task_type", "input_text"}`.
    TaskPredict => "/predict", Post, Model(Predict, Uninlu), Always;
    /// OpenAI's model list, which clients and the tools built on them call to discover the model.
    OpenAiModels => "/v1/models", Get, Open, Always;
    OpenAiModel => "/v1/models/{*id}", Get, Open, Always;
    Healthz => "/healthz", Get, Open, Never;
    Readyz => "/readyz", Get, Open, Never;
    /// The second seed app's health route, which its clients call through the Ingress.
    Health => "/health", Get, Open, Always;
    /// The playground page reads the model's task from it and links the document.
    Info => "/info", Get, Open, WithPlayground;
    OpenApi => "/openapi.json", Get, Open, WithPlayground;
    /// Tenant ids and each tenant's traffic: never public.
    Metrics => "/metrics", Get, Kind::Metrics, Never;
    Playground => "/", Get, Playground, WithPlayground;
    PlaygroundScript => "/playground/playground.js", Get, Playground, WithPlayground;
    PlaygroundStyle => "/playground/playground.css", Get, Playground, WithPlayground;
}

impl Route {
    pub const fn path(self) -> &'static str {
        self.facts().path
    }

    pub const fn method(self) -> Method {
        self.facts().method
    }

    pub const fn kind(self) -> Kind {
        self.facts().kind
    }

    /// Whether the Ingress of a server of `task` publishes this route, given whether the
    /// playground is on.
    pub fn is_public(self, task: Task, playground: bool) -> bool {
        if let Kind::Model(_, for_task) = self.kind() {
            if for_task != task {
                return false;
            }
        }
        match self.facts().public {
            Public::Always => true,
            Public::WithPlayground => playground,
            Public::Never => false,
        }
    }

    /// The scope a tenant needs for this route; `None` for routes that are not tenant operations.
    pub const fn scope(self) -> Option<Scope> {
        match self.kind() {
            Kind::Model(scope, _) => Some(scope),
            _ => None,
        }
    }

    /// The path in OpenAPI's syntax, where a rest parameter `{*name}` is written `{name}`.
    pub fn openapi_path(self) -> String {
        self.path().replace("{*", "{")
    }

    /// What an Ingress rule needs to match this route: the path up to its first parameter, and
    /// whether that is the whole path (`Exact`) or a prefix of it (`Prefix`).
    pub fn ingress_path(self) -> (&'static str, bool) {
        match self.path().split_once("/{") {
            Some((fixed, _)) => (fixed, false),
            None => (self.path(), true),
        }
    }

    /// The route of a request path.
    pub fn find(path: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|r| matches(r.path(), path))
    }
}

/// Whether `path` matches the route path `pattern` (see [`Facts::path`]); parameters match only
/// non-empty segments, as axum's do.
fn matches(pattern: &str, path: &str) -> bool {
    let mut path_segments = path.split('/');
    for expected in pattern.split('/') {
        let Some(segment) = path_segments.next() else {
            return false;
        };
        if expected.starts_with("{*") {
            return !segment.is_empty();
        }
        let parameter = expected.starts_with('{');
        if (parameter && segment.is_empty()) || (!parameter && segment != expected) {
            return false;
        }
    }
    path_segments.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_unique_and_scopes_follow_the_kind() {
        for route in Route::ALL {
            assert_eq!(Route::find(route.path()), Some(route));
        }
        for path in ["/api/predict", "/predict"] {
            assert_eq!(
                Route::find(path).and_then(Route::scope),
                Some(Scope::Predict),
                "{path}"
            );
        }
        for path in [
            "/v1/embeddings",
            "/embed",
            "/embed_sparse",
            "/embed_colbert",
            "/similarity",
            "/tokenize",
            "/decode",
        ] {
            assert_eq!(
                Route::find(path).and_then(Route::scope),
                Some(Scope::Embed),
                "{path}"
            );
        }
        for path in ["/rerank", "/v1/rerank"] {
            assert_eq!(
                Route::find(path).and_then(Route::scope),
                Some(Scope::Rerank),
                "{path}"
            );
        }
        assert_eq!(Route::find("/healthz").and_then(Route::scope), None);
        assert_eq!(Route::find("/v1/models").and_then(Route::scope), None);
        assert_eq!(Route::find("/api/predict/"), None);
        assert_eq!(Route::find("/api"), None);
        assert_eq!(Route::find(""), None);
    }

    #[test]
    fn parameters_match_one_segment_or_the_rest() {
        assert!(matches("/a/{id}", "/a/x"));
        assert!(!matches("/a/{id}", "/a/"));
        assert!(!matches("/a/{id}", "/a/x/y"));
        assert!(!matches("/a/{id}", "/a"));
        assert!(matches("/a/{*id}", "/a/x/y"));
        assert!(matches("/a/{*id}", "/a/x"));
        assert!(!matches("/a/{*id}", "/a/"));
        assert!(!matches("/a/{*id}", "/a"));
        assert!(!matches("/a/b", "/a/c"));
        assert_eq!(
            Route::find("/v1/models/BAAI/bge-m3"),
            Some(Route::OpenAiModel)
        );
        assert_eq!(Route::find("/v1/models"), Some(Route::OpenAiModels));
    }

    #[test]
    fn ingress_paths_stop_at_the_first_parameter() {
        assert_eq!(Route::Embed.ingress_path(), ("/embed", true));
        assert_eq!(Route::OpenAiModel.ingress_path(), ("/v1/models", false));
        assert_eq!(Route::OpenAiModel.openapi_path(), "/v1/models/{id}");
    }

    #[test]
    fn model_routes_and_discovery_are_public_without_the_playground() {
        let public = |task, playground| -> Vec<&str> {
            Route::ALL
                .into_iter()
                .filter(|r| r.is_public(task, playground))
                .map(Route::path)
                .collect()
        };
        assert_eq!(
            public(Task::Embedding, false),
            [
                "/v1/embeddings",
                "/embed",
                "/embed_sparse",
                "/embed_colbert",
                "/similarity",
                "/tokenize",
                "/decode",
                "/v1/models",
                "/v1/models/{*id}",
                "/health"
            ]
        );
        assert_eq!(
            public(Task::Uninlu, false),
            ["/api/predict", "/predict", "/v1/models", "/v1/models/{*id}", "/health"]
        );
        assert_eq!(
            public(Task::Rerank, false),
            ["/rerank", "/v1/rerank", "/v1/models", "/v1/models/{*id}", "/health"]
        );
        let with_playground = public(Task::Uninlu, true);
        assert!(with_playground.contains(&"/"));
        assert!(with_playground.contains(&"/info"));
        for private in ["/metrics", "/healthz", "/readyz"] {
            assert!(!with_playground.contains(&private), "{private}");
        }
    }
}
