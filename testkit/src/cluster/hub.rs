//! A loopback model hub: Hugging Face (`/{repo}/resolve/{revision}/{file}`) and ModelScope
//! (`/api/v1/models/{repo}/repo?Revision=..&FilePath=..`) layouts over local folders, and each
//! folder as a `.tar.gz` at `/archives/{repo}.tar.gz` (for `download --url`), so the pods' init
//! containers run the real download path. Any revision serves the same folder; a repo or file
//! it does not hold is a 404.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;

/// Repo id (`owner/name`) -> model folder.
pub type Repos = Arc<BTreeMap<String, PathBuf>>;

/// Serves `repos` on a loopback port of the current runtime; returns the endpoint URL.
pub async fn start(repos: Repos) -> String {
    let app = axum::Router::new().fallback(serve).with_state(repos);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port for the hub");
    let address: SocketAddr = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("hub serves");
    });
    format!("http://{address}")
}

/// The archive URL path of `repo`.
pub fn archive_path(repo: &str) -> String {
    format!("/archives/{repo}.tar.gz")
}

async fn serve(State(repos): State<Repos>, request: Request) -> Response {
    if let Some(repo) = request
        .uri()
        .path()
        .strip_prefix("/archives/")
        .and_then(|p| p.strip_suffix(".tar.gz"))
    {
        return archive(repos.get(repo)).await;
    }
    let Some((repo, file)) = locate(request.uri().path(), request.uri().query().unwrap_or(""))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(folder) = repos.get(&repo) else {
        return (StatusCode::NOT_FOUND, format!("no repo {repo}")).into_response();
    };
    if Path::new(&file)
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return StatusCode::BAD_REQUEST.into_response();
    }
    match tokio::fs::read(folder.join(&file)).await {
        Ok(bytes) => Response::new(Body::from(bytes)),
        Err(_) => (StatusCode::NOT_FOUND, format!("no file {file} in {repo}")).into_response(),
    }
}

/// The folder as a gzipped tarball (GNU tar, files at the archive's root).
async fn archive(folder: Option<&PathBuf>) -> Response {
    let Some(folder) = folder else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let output = tokio::process::Command::new("tar")
        .arg("-czf")
        .arg("-")
        .arg("-C")
        .arg(folder)
        .arg(".")
        .output()
        .await;
    match output {
        Ok(out) if out.status.success() => Response::new(Body::from(out.stdout)),
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The repo and file a request names, in either layout.
fn locate(path: &str, query: &str) -> Option<(String, String)> {
    if let Some(rest) = path.strip_prefix("/api/v1/models/") {
        let repo = rest.strip_suffix("/repo")?;
        let params: BTreeMap<String, String> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        return Some((repo.to_owned(), params.get("FilePath")?.clone()));
    }
    let mut parts = path.trim_start_matches('/').splitn(5, '/');
    let (owner, name, resolve, _revision, file) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    (resolve == "resolve").then(|| (format!("{owner}/{name}"), file.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::locate;

    #[test]
    fn both_layouts() {
        assert_eq!(
            locate(
                "/thenlper/gte-base-zh/resolve/main/1_Pooling/config.json",
                ""
            ),
            Some((
                "thenlper/gte-base-zh".into(),
                "1_Pooling/config.json".into()
            ))
        );
        assert_eq!(
            locate(
                "/api/v1/models/damo/uninlu/repo",
                "Revision=master&FilePath=vocab.txt"
            ),
            Some(("damo/uninlu".into(), "vocab.txt".into()))
        );
        assert_eq!(locate("/other", ""), None);
    }
}
