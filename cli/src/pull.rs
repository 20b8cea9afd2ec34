//! `pull`: a hub repo into the local hub cache, with a progress bar on a
//! terminal; Ctrl-C stops it (what is partly downloaded is kept for the
//! next `pull` to resume).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use model_manager::{ModelSource, Progress, ProgressHook};
use tokio::sync::watch;

use crate::load::Interrupted;
use crate::CliResult;

/// `ORG/NAME[@REV]` as a hub source (the library checks the id).
pub fn repo_source(arg: &str) -> ModelSource {
    match arg.split_once('@') {
        Some((repo, rev)) => ModelSource::hub_revision(repo, rev),
        None => ModelSource::hub(arg),
    }
}

pub async fn pull(source: ModelSource) -> CliResult {
    // Ctrl-C is caught from now to the end.
    let ctrl_c = crate::load::interrupted()?;
    tokio::pin!(ctrl_c);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut progress) = watch::channel(Progress::default());
    let hook: ProgressHook = Arc::new(move |p: &Progress| {
        tx.send_replace(p.clone());
    });
    let task = tokio::task::spawn_blocking({
        let (source, stop) = (source.clone(), stop.clone());
        move || model_manager::pull(&source, &stop, Some(&hook))
    });
    tokio::pin!(task);
    let bar = crate::load::progress_bar()?;
    let outcome = loop {
        tokio::select! {
            outcome = &mut task => break outcome?,
            changed = progress.changed() => {
                if changed.is_ok() {
                    let p = progress.borrow_and_update().clone();
                    bar.set_length(p.download_total);
                    bar.set_position(p.download_done);
                    let file = p.current.as_deref().unwrap_or("");
                    bar.set_message(file.trim_start_matches("download: ").to_string());
                }
            }
            _ = &mut ctrl_c => {
                stop.store(true, Ordering::Release);
                bar.abandon_with_message("cancelling");
                // Ends within one read (at most the read timeout).
                let _ = task.await;
                return Err(Interrupted.into());
            }
        }
    };
    match outcome {
        Ok(snapshot) => {
            // The snapshot folder alone, for `$(model-manager pull ...)`.
            bar.finish_and_clear();
            println!("{}", snapshot.display());
            Ok(())
        }
        Err(e) => {
            bar.abandon();
            Err(e.into())
        }
    }
}
