//! One file-system watcher per directory, shared by every replicator whose database lives
//! there. A watcher per database (one inotify instance each) runs out of the kernel's
//! per-user limit of instances long before 1,000 databases, and on one shared directory each
//! write would wake every one of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Pause of the watcher's thread after repeated events of one WAL (see `dir_watcher`).
const EVENT_PACE: Duration = Duration::from_millis(2);

/// WAL path -> the wake-ups of the replicators watching it (normally one).
type Targets = Arc<Mutex<HashMap<PathBuf, Vec<(u64, Arc<Notify>)>>>>;

struct DirWatcher {
    _watcher: notify::RecommendedWatcher,
    targets: Targets,
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<DirWatcher>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, Weak<DirWatcher>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A registration with the shared watcher of a database's directory: `wake` is notified when
/// the database's `-wal` file is created or modified. Unregisters when dropped; the directory's
/// watcher stops with its last registration.
pub(crate) struct WalWatch {
    dir: Arc<DirWatcher>,
    wal: PathBuf,
    id: u64,
}

impl std::fmt::Debug for WalWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalWatch").field("wal", &self.wal).finish()
    }
}

impl Drop for WalWatch {
    fn drop(&mut self) {
        if let Ok(mut t) = self.dir.targets.lock() {
            if let Some(v) = t.get_mut(&self.wal) {
                v.retain(|(id, _)| *id != self.id);
                if v.is_empty() {
                    t.remove(&self.wal);
                }
            }
        }
    }
}

fn dir_watcher(dir: &Path) -> notify::Result<Arc<DirWatcher>> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let mut reg = registry()
        .lock()
        .map_err(|_| notify::Error::generic("watcher registry poisoned"))?;
    reg.retain(|_, w| w.strong_count() > 0);
    if let Some(d) = reg.get(dir).and_then(Weak::upgrade) {
        return Ok(d);
    }
    let targets: Targets = Arc::default();
    let seen = Arc::clone(&targets);
    let mut last: Option<(PathBuf, Instant)> = None;
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if !matches!(ev.kind, EventKind::Modify(_) | EventKind::Create(_)) {
            return;
        }
        let mut woke = None;
        if let Ok(t) = seen.lock() {
            for p in &ev.paths {
                for (_, wake) in t.get(p).into_iter().flatten() {
                    wake.notify_one();
                    woke = Some(p);
                }
            }
        }
        // An application writing back to back modifies its WAL thousands of times a second,
        // and each modification would wake this thread (a context switch each; the monitor
        // batches its syncs anyway). After waking the same WAL's replicator twice within
        // `EVENT_PACE`, pause: meanwhile the kernel merges the WAL's further identical
        // events into one.
        if let Some(p) = woke {
            let now = Instant::now();
            let repeat = last
                .as_ref()
                .is_some_and(|(lp, at)| lp == p && now.duration_since(*at) < EVENT_PACE);
            last = Some((p.clone(), now));
            if repeat {
                std::thread::sleep(EVENT_PACE);
            }
        }
    })?;
    w.watch(dir, RecursiveMode::NonRecursive)?;
    let d = Arc::new(DirWatcher {
        _watcher: w,
        targets,
    });
    reg.insert(dir.to_path_buf(), Arc::downgrade(&d));
    Ok(d)
}

/// Watch `db`'s `-wal` file through its directory's shared watcher.
pub(crate) fn watch_wal(db: &Path, wake: Arc<Notify>) -> notify::Result<WalWatch> {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let dir = db
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let d = dir_watcher(&dir)?;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    d.targets
        .lock()
        .map_err(|_| notify::Error::generic("watcher targets poisoned"))?
        .entry(wal.clone())
        .or_default()
        .push((id, wake));
    Ok(WalWatch { dir: d, wal, id })
}
