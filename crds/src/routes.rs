//! Every HTTP route of `nlu-server`, declared once. The server builds its router, its auth scope
//! check, its metrics labels and the OpenAPI check from this table; the operator publishes
//! through the Ingress only the routes it marks public. Adding a route is one entry here plus its
//! handler in the server's `match` over [`Route`], which the compiler keeps complete.

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
    /// Probes and the API document: open, for the kubelet and in-cluster tooling.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    OpenAiEmbeddings,
    Embed,
    Similarity,
    Predict,
    Healthz,
    Readyz,
    Info,
    OpenApi,
    Metrics,
    Playground,
    PlaygroundScript,
    PlaygroundStyle,
}

impl Route {
    pub const ALL: [Route; 12] = [
        Route::OpenAiEmbeddings,
        Route::Embed,
        Route::Similarity,
        Route::Predict,
        Route::Healthz,
        Route::Readyz,
        Route::Info,
        Route::OpenApi,
        Route::Metrics,
        Route::Playground,
        Route::PlaygroundScript,
        Route::PlaygroundStyle,
    ];

    /// The route's facts: path, method, kind and exposure.
    const fn facts(self) -> (&'static str, Method, Kind, Public) {
        use Kind::*;
        use Method::*;
        match self {
            Route::OpenAiEmbeddings => (
                "/v1/embeddings",
                Post,
                Model(Scope::Embed, Task::Embedding),
                Public::Always,
            ),
            Route::Embed => (
                "/embed",
                Post,
                Model(Scope::Embed, Task::Embedding),
                Public::Always,
            ),
            Route::Similarity => (
                "/similarity",
                Post,
                Model(Scope::Embed, Task::Embedding),
                Public::Always,
            ),
            Route::Predict => (
                "/api/predict",
                Post,
                Model(Scope::Predict, Task::Uninlu),
                Public::Always,
            ),
            Route::Healthz => ("/healthz", Get, Open, Public::Never),
            Route::Readyz => ("/readyz", Get, Open, Public::Never),
            // The playground page reads the model's task from /info and links the document.
            Route::Info => ("/info", Get, Open, Public::WithPlayground),
            Route::OpenApi => ("/openapi.json", Get, Open, Public::WithPlayground),
            // Tenant ids and each tenant's traffic: never public.
            Route::Metrics => ("/metrics", Get, Kind::Metrics, Public::Never),
            Route::Playground => ("/", Get, Kind::Playground, Public::WithPlayground),
            Route::PlaygroundScript => (
                "/playground/playground.js",
                Get,
                Kind::Playground,
                Public::WithPlayground,
            ),
            Route::PlaygroundStyle => (
                "/playground/playground.css",
                Get,
                Kind::Playground,
                Public::WithPlayground,
            ),
        }
    }

    pub const fn path(self) -> &'static str {
        self.facts().0
    }

    pub const fn method(self) -> Method {
        self.facts().1
    }

    pub const fn kind(self) -> Kind {
        self.facts().2
    }

    /// Whether the Ingress of a server of `task` publishes this route, given whether the
    /// playground is on.
    pub fn is_public(self, task: Task, playground: bool) -> bool {
        if let Kind::Model(_, for_task) = self.kind() {
            if for_task != task {
                return false;
            }
        }
        match self.facts().3 {
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

    /// Whether the OpenAPI document describes it (the playground's static files it does not).
    pub const fn documented(self) -> bool {
        !matches!(self, Route::PlaygroundScript | Route::PlaygroundStyle)
    }

    /// The route of a request path (exact match: routes take no path parameters).
    pub fn find(path: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|r| r.path() == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_unique_and_scopes_follow_the_kind() {
        for route in Route::ALL {
            assert_eq!(Route::find(route.path()), Some(route));
        }
        assert_eq!(
            Route::find("/api/predict").and_then(Route::scope),
            Some(Scope::Predict)
        );
        for path in ["/v1/embeddings", "/embed", "/similarity"] {
            assert_eq!(
                Route::find(path).and_then(Route::scope),
                Some(Scope::Embed),
                "{path}"
            );
        }
        assert_eq!(Route::find("/healthz").and_then(Route::scope), None);
        assert_eq!(Route::find("/api/predict/"), None);
    }

    #[test]
    fn only_model_routes_are_public_without_the_playground() {
        let public = |task, playground| -> Vec<&str> {
            Route::ALL
                .into_iter()
                .filter(|r| r.is_public(task, playground))
                .map(Route::path)
                .collect()
        };
        assert_eq!(
            public(Task::Embedding, false),
            ["/v1/embeddings", "/embed", "/similarity"]
        );
        assert_eq!(public(Task::Uninlu, false), ["/api/predict"]);
        let with_playground = public(Task::Uninlu, true);
        assert!(with_playground.contains(&"/"));
        assert!(with_playground.contains(&"/info"));
        for private in ["/metrics", "/healthz", "/readyz"] {
            assert!(!with_playground.contains(&private), "{private}");
        }
    }
}
