//! A model folder (decoded as for `folder`) fed through a stream
//! (`ModelSource::stream`) in pieces whose sizes, and in an order that,
//! the input's hash picks: the load must end Ready or Failed (never panic,
//! never hang), hold nothing after a failure, and, where every name is
//! already in normal form, end as the same files in memory do when either
//! ends Ready: both Ready, with the same tensors.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use model_manager::{ModelSource, State};
use model_manager_fuzz::{decode, manager, runtime, Files};

/// Every tensor of the ready model, as raw bytes by `component/name`.
fn tensors() -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    let lease = manager().acquire().expect("ready");
    lease
        .tensors()
        .map(|(c, n, t)| {
            let bytes = t
                .flatten_all()
                .and_then(|t| t.to_dtype(model_manager::candle_core::DType::F64))
                .and_then(|t| t.to_vec1::<f64>())
                .map(|v| v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect())
                .unwrap_or_default();
            (format!("{c}/{n}"), (t.dims().to_vec(), bytes))
        })
        .collect()
}

/// Load `source` through the shared manager: the tensors, or `None` after a
/// failure (checked to hold nothing); the manager is idle again after.
fn settle(
    outcome: model_manager::Result<model_manager::Snapshot>,
) -> Option<BTreeMap<String, (Vec<usize>, Vec<u8>)>> {
    let manager = manager();
    match outcome {
        Ok(_) => {
            assert_eq!(manager.current_state(), State::Ready);
            let t = tensors();
            runtime().block_on(manager.unload()).expect("unload");
            Some(t)
        }
        Err(e) => {
            assert_eq!(manager.current_state(), State::Failed, "{e}");
            assert_eq!(manager.resident_bytes(), 0, "{e}");
            manager.reset().expect("reset");
            None
        }
    }
}

fn normal(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('\\')
        && name
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
}

fuzz_target!(|data: &[u8]| {
    let files: Files = decode(data);
    if files.is_empty() {
        return;
    }
    let hash = data.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let mut order: Vec<(&String, &Vec<u8>)> = files.iter().collect();
    let n = order.len();
    order.rotate_left(hash as usize % n);
    if hash & 0x100 != 0 {
        order.reverse();
    }
    let pieces = [
        1 + (hash >> 9) as usize % 7,
        1 + (hash >> 12) as usize % 5000,
        64 << 10,
    ];

    let manager = manager();
    let (source, writer) = ModelSource::stream();
    let load = manager.load(source).expect("load accepted");
    let streamed = runtime().block_on(async {
        let feed = async {
            for (k, (name, bytes)) in order.iter().enumerate() {
                if writer.writable().await.is_err()
                    || writer.begin(name, Some(bytes.len() as u64)).is_err()
                {
                    return;
                }
                let mut rest = &bytes[..];
                let mut p = k;
                while !rest.is_empty() {
                    let n = pieces[p % pieces.len()].min(rest.len());
                    p += 1;
                    match writer.write(&rest[..n]) {
                        Ok(0) => {
                            if writer.writable().await.is_err() {
                                return;
                            }
                        }
                        Ok(n) => rest = &rest[n..],
                        Err(_) => return,
                    }
                }
                if writer.end().is_err() {
                    return;
                }
            }
            if writer.writable().await.is_ok() {
                let _ = writer.finish();
            }
        };
        let (_, outcome) = tokio::join!(feed, std::future::IntoFuture::into_future(load));
        outcome
    });
    drop(writer);
    let streamed = settle(streamed);

    if !files.keys().all(|n| normal(n)) {
        return;
    }
    let in_memory = manager
        .load(ModelSource::files(files.clone()))
        .expect("load accepted");
    let in_memory = settle(runtime().block_on(std::future::IntoFuture::into_future(in_memory)));
    // A stream also loads (then frees) weights files the layout leaves out,
    // so it may fail where the files load; when it loads, so do they, alike.
    if let Some(streamed) = streamed {
        assert_eq!(
            Some(streamed),
            in_memory,
            "the stream loaded what the files do not, or otherwise"
        );
    }
});
