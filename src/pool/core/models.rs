//! Commands on the pool's models: add, pin, keep-alive, reload, cancel,
//! unload, remove.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{entry_mut, refuse_stream, Core, Entry, Inner, Outcome};
use crate::error::{Error, Result};
use crate::io::ModelSource;
use crate::pipeline::Pipeline;
use crate::pool::keep_alive::KeepAlive;
use crate::pool::options::{ModelOptions, ReloadPolicy};
use crate::pool::status::UnloadReason;

impl<P: Pipeline> Core<P> {
    // ---- the model table ----------------------------------------------

    pub(crate) fn add(&self, id: &str, source: ModelSource, options: ModelOptions) -> Result<()> {
        refuse_stream(&source)?;
        let source = Arc::new(source);
        let mut inner = self.lock();
        self.check_new(&inner, [id])?;
        self.insert_entry(&mut inner, id, source, None, options);
        Ok(())
    }

    /// One entry per weighted component of the pipeline `source`, as
    /// `id/component`, all or none (checked and inserted under one lock);
    /// their ids.
    pub(crate) fn add_pipeline(
        &self,
        id: &str,
        source: ModelSource,
        options: ModelOptions,
    ) -> Result<Vec<String>> {
        refuse_stream(&source)?;
        if id.is_empty() {
            return Err(Error::InvalidArgument(
                "a pipeline's id must not be empty".into(),
            ));
        }
        let components = crate::io::weighted_components(&source)?;
        let ids: Vec<String> = components.iter().map(|c| format!("{id}/{c}")).collect();
        let source = Arc::new(source);
        let mut inner = self.lock();
        self.check_new(&inner, ids.iter().map(String::as_str))?;
        for (component, entry_id) in components.iter().zip(&ids) {
            self.insert_entry(
                &mut inner,
                entry_id,
                source.clone(),
                Some(Arc::from(component.as_str())),
                options.clone(),
            );
        }
        Ok(ids)
    }

    /// Whether `ids` may be added now.
    fn check_new<'i>(
        &self,
        inner: &Inner<P>,
        ids: impl IntoIterator<Item = &'i str>,
    ) -> Result<()> {
        if inner.shut_down {
            return Err(Error::ShutDown);
        }
        for id in ids {
            if id.is_empty() {
                return Err(Error::InvalidArgument(
                    "a model id must not be empty".into(),
                ));
            }
            if inner.entries.contains_key(id) {
                return Err(Error::InvalidArgument(format!(
                    "the pool already has a model {id:?}"
                )));
            }
        }
        Ok(())
    }

    fn insert_entry(
        &self,
        inner: &mut Inner<P>,
        id: &str,
        source: Arc<ModelSource>,
        component: Option<Arc<str>>,
        options: ModelOptions,
    ) {
        let id: Arc<str> = Arc::from(id);
        let now = self.now();
        let keep_alive = options.keep_alive.unwrap_or(self.config.keep_alive);
        let last_version = inner.versions.get(&id).copied().unwrap_or(0);
        inner.entries.insert(
            id.clone(),
            Entry {
                id,
                source,
                component,
                serving: None,
                job: None,
                retiring: Vec::new(),
                keep_alive: KeepAlive::new(keep_alive, now),
                pinned: options.pinned,
                last_used: 0,
                last_used_at: None,
                last_error: None,
                retry_at: None,
                waiters: 0,
                stopping: 0,
                removing: false,
                first_version: last_version + 1,
                parked: None,
                parking: None,
                park_leases: Vec::new(),
            },
        );
    }

    pub(crate) fn set_pinned(&self, id: &str, pinned: bool) -> Result<()> {
        let mut inner = self.lock();
        let entry = entry_mut(&mut inner, id)?;
        entry.pinned = pinned;
        drop(inner);
        self.bump();
        Ok(())
    }

    pub(crate) fn set_keep_alive(&self, id: &str, ttl: Option<Duration>) -> Result<()> {
        let now = self.now();
        let mut inner = self.lock();
        let entry = entry_mut(&mut inner, id)?;
        entry.keep_alive.set_ttl(ttl, now);
        drop(inner);
        self.bump();
        Ok(())
    }

    /// Load `source` as the next version of `id`, beside the serving one;
    /// the newest reload wins.
    pub(crate) fn reload(
        self: &Arc<Self>,
        id: &str,
        source: ModelSource,
        policy: ReloadPolicy,
    ) -> Result<watch::Receiver<Outcome>> {
        refuse_stream(&source)?;
        let mut inner = self.lock();
        if inner.shut_down {
            return Err(Error::ShutDown);
        }
        let entry = entry_mut(&mut inner, id)?;
        let replaced = entry.job.as_ref().map(|j| (entry.id.clone(), j.version));
        let queued = inner
            .queue
            .iter()
            .filter(|k| Some(*k) != replaced.as_ref())
            .count();
        if queued >= self.config.max_queue {
            return Err(Error::QueueFull {
                limit: self.config.max_queue,
            });
        }
        let Inner { entries, queue, .. } = &mut *inner;
        if let Some(entry) = entries.get_mut(id) {
            // The newest request wins: the older load stops (and frees
            // what it read before its charge goes); its waiters join this
            // one.
            entry.stop_job(queue, true);
        }
        self.start_job(&mut inner, id, Arc::new(source), Some(policy))
    }

    /// Cancel the load in flight for `id`; whether there was one.
    pub(crate) fn cancel(&self, id: &str) -> Result<bool> {
        let mut inner = self.lock();
        entry_mut(&mut inner, id)?;
        let Inner { entries, queue, .. } = &mut *inner;
        let stopped = entries
            .get_mut(id)
            .is_some_and(|entry| entry.stop_job(queue, false));
        drop(inner);
        self.bump();
        Ok(stopped)
    }

    /// Unload `id`: cancel its load, retire its serving version; then wait
    /// until nothing of it is charged.
    pub(crate) async fn unload(self: &Arc<Self>, id: &str) -> Result<()> {
        let versions = {
            let mut inner = self.lock();
            entry_mut(&mut inner, id)?;
            self.begin_unload(&mut inner, id)
        };
        self.bump();
        self.gone(id, &versions).await;
        Ok(())
    }

    /// Stop `id`'s load, retire its serving version; every version of it
    /// there is now (loading, retiring, charged).
    pub(super) fn begin_unload(self: &Arc<Self>, inner: &mut Inner<P>, id: &str) -> Vec<u64> {
        let Inner {
            entries,
            queue,
            host,
            ..
        } = &mut *inner;
        let Some(entry) = entries.get_mut(id) else {
            return Vec::new();
        };
        entry.stop_job(queue, false);
        // Its copy in host memory goes too, and a copy being made is not
        // kept (the park sees it is no longer wanted).
        self.unpark(host, entry);
        entry.stop_parking(host);
        if let Some(old) = entry.serving.take() {
            self.retire(entry, old, UnloadReason::Unloaded);
        }
        let id = entry.id.clone();
        let mut versions: Vec<u64> = entry.retiring.iter().map(|v| v.number).collect();
        versions.extend(
            inner
                .ledger
                .iter()
                .filter(|(k, _)| k.0 == id)
                .map(|(k, _)| k.1),
        );
        versions
    }

    /// Wait until none of these `versions` of `id` is charged or retiring.
    /// Only these: a load of it started since (another caller's acquire)
    /// is not this unload's to wait for, so the wait ends.
    pub(super) async fn gone(&self, id: &str, versions: &[u64]) {
        let mut changed = self.changed.subscribe();
        loop {
            changed.borrow_and_update();
            {
                let inner = self.lock();
                let charged = inner
                    .ledger
                    .iter()
                    .any(|(k, _)| &*k.0 == id && versions.contains(&k.1));
                let retiring = inner
                    .entries
                    .get(id)
                    .is_some_and(|e| e.retiring.iter().any(|v| versions.contains(&v.number)));
                if !charged && !retiring {
                    return;
                }
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Refuse every new command for `id` (it answers `UnknownModel` from
    /// now on), unload it, wait until nothing of it is loading, charged or
    /// retiring, then forget it.
    pub(crate) async fn remove(self: &Arc<Self>, id: &str) -> Result<()> {
        {
            let mut inner = self.lock();
            entry_mut(&mut inner, id)?.removing = true;
            self.begin_unload(&mut inner, id);
        }
        self.bump();
        let mut changed = self.changed.subscribe();
        loop {
            changed.borrow_and_update();
            {
                let mut inner = self.lock();
                let charged = inner.ledger.iter().any(|(k, _)| &*k.0 == id);
                let quiet = inner.entries.get(id).is_none_or(|e| {
                    e.serving.is_none()
                        && e.job.is_none()
                        && e.retiring.is_empty()
                        && e.stopping == 0
                });
                if !charged && quiet {
                    let removed = inner.entries.remove(id);
                    drop(inner);
                    drop(removed);
                    return Ok(());
                }
            }
            if changed.changed().await.is_err() {
                return Ok(());
            }
        }
    }
}
