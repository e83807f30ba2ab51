//! `nlu-server download`: fetch a model folder before serving (the operator's init container).

use std::path::PathBuf;

use crate::config::DownloadArgs;
use crate::model::{self, HubConfig};

/// Downloads the model the arguments name and returns its local folder.
pub fn run(args: &DownloadArgs) -> model::Result<PathBuf> {
    let checked = |hub: HubConfig| HubConfig {
        max_download_bytes: args.max_download_bytes,
        sha256: args.sha256.clone(),
        ..hub
    };
    if let Some(url) = &args.url {
        // clap guarantees --output-dir with --url.
        let dir = args.output_dir.clone().unwrap_or_default();
        return model::download_archive(url, &dir, &checked(HubConfig::from_env()));
    }
    let (repo, hub) = match (&args.model, &args.modelscope) {
        (_, Some(id)) => (id, HubConfig::modelscope_from_env()),
        (Some(repo), None) => (repo, HubConfig::from_env()),
        (None, None) => return Err(model::ModelError::BadSpec(String::new())),
    };
    let endpoint = if args.modelscope.is_some() { &args.modelscope_endpoint } else { &args.hub_endpoint };
    let mut hub = checked(hub).with_flags(endpoint.as_deref(), args.cache_dir.as_deref());
    if let Some(revision) = &args.revision {
        hub.revision = revision.clone();
    }
    let dir = args.output_dir.clone().unwrap_or_else(|| hub.cache_path(repo));
    model::download_into(repo, &hub, &dir)
}
