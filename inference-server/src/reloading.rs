//! Values loaded from files and reloaded when the files change, without a restart: mounted
//! Secrets and ConfigMaps (certificates, JWK Sets) are replaced in place by the kubelet.
//!
//! Files are polled: a change of modification time, size or inode (a swapped symlink) triggers
//! a reload. A file that fails to load keeps the previous value in service and is retried.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

/// How often watched files are checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

type Fingerprint = Vec<Option<(SystemTime, u64, u64)>>;

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&m);
            #[cfg(not(unix))]
            let inode = 0;
            Some((m.modified().ok()?, m.len(), inode))
        })
        .collect()
}

/// The current value, swapped atomically by a background task while this handle lives.
pub struct Reloading<T> {
    current: Arc<ArcSwap<T>>,
}

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Loads once (an error here is fatal to the caller), then watches `paths` on the Tokio runtime.
    pub fn start<F>(what: &'static str, paths: Vec<PathBuf>, load: F) -> anyhow::Result<Self>
    where
        F: Fn() -> anyhow::Result<T> + Send + 'static,
    {
        let mut seen = fingerprint(&paths);
        let current = Arc::new(ArcSwap::from_pointee(load()?));
        let weak: Weak<ArcSwap<T>> = Arc::downgrade(&current);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            loop {
                tick.tick().await;
                let Some(current) = weak.upgrade() else {
                    return;
                };
                let now = fingerprint(&paths);
                if now == seen {
                    continue;
                }
                match load() {
                    Ok(value) => {
                        current.store(Arc::new(value));
                        seen = now;
                        tracing::info!(what, "reloaded after its files changed");
                    }
                    // Half-written files are common during a swap: keep the old value, retry.
                    Err(e) => {
                        tracing::warn!(what, error = %format!("{e:#}"), "reload failed; keeping the previous version")
                    }
                }
            }
        });
        Ok(Self { current })
    }

    pub fn get(&self) -> Arc<T> {
        self.current.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn picks_up_changes_and_keeps_the_old_value_on_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.txt");
        std::fs::write(&path, "1").unwrap();
        let read = {
            let path = path.clone();
            move || Ok(std::fs::read_to_string(&path)?.trim().parse::<u32>()?)
        };
        let value = Reloading::start("test number", vec![path.clone()], read).unwrap();
        assert_eq!(*value.get(), 1);

        let wait_for = |want: u32| {
            let value = &value;
            async move {
                for _ in 0..40 {
                    if *value.get() == want {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                panic!("value never became {want}, still {}", value.get());
            }
        };
        std::fs::write(&path, "22").unwrap();
        wait_for(22).await;
        std::fs::write(&path, "not a number").unwrap();
        tokio::time::sleep(POLL_INTERVAL * 3).await;
        assert_eq!(*value.get(), 22, "a broken file keeps the previous value");
        std::fs::write(&path, "333").unwrap();
        wait_for(333).await;
    }
}
