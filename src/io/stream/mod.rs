//! Models that arrive over time (a download): a [`ModelSource::Stream`]
//! and its [`StreamWriter`], which a producer (a `fetch`, a socket, a
//! decompressor) feeds file by file while the load runs.
//!
//! The bytes of a weights file go straight into their final place: once a
//! file's header has arrived, the load parses it, checks the budget,
//! allocates the file's tensor buffers (fallibly), and from then on every
//! write copies the producer's bytes directly into those buffers
//! ([`StreamWriter::write_with`] hands the producer the destination). No
//! copy of the file is kept beside the tensors: a streamed model needs its
//! size in memory, plus its headers and small (JSON) files.
//!
//! Files may arrive in any order (configs, indexes, shards, a diffusers
//! `model_index.json` and its components, named as in the folder:
//! `unet/config.json`); the layout is resolved, as for a folder, once the
//! producer calls [`StreamWriter::finish`]. A weights file the layout does
//! not use is freed then.
//!
//! Progress counts tensor bytes and tensors as they are written; its
//! totals grow as each weights file's header arrives (a stream does not
//! know the model's size up front; a producer that knows its files'
//! lengths can report the download against them). The memory budget is
//! checked file by file, before each file's buffers are allocated.
//!
//! Lifecycle and errors are those of any load: progress at every write,
//! cancel at any moment (the load frees what it holds, then is `Idle`),
//! and a producer's failure ([`StreamWriter::abort`], or a file that ends
//! short) ends the load in `Failed` with that error. Every wait on either
//! side ends when the other side ends: a write or [`StreamWriter::writable`]
//! after the load ended returns the load's error; a load waiting for bytes
//! ends on cancel, or on the writer's abort or drop. How long to wait for a
//! stalled producer is the producer's decision (a timeout, then `abort`).
//!
//! ```
//! use model_manager::{ModelManager, ModelSource};
//! # fn file() -> Vec<u8> {
//! #     let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
//! #     let mut f = (header.len() as u64).to_le_bytes().to_vec();
//! #     f.extend_from_slice(header);
//! #     f.extend_from_slice(&[0u8; 8]);
//! #     f
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), model_manager::Error> {
//! let manager = ModelManager::new()?;
//! let (source, writer) = ModelSource::stream();
//! let load = manager.load(source)?;
//!
//! let bytes = file(); // what arrives, in pieces of any size
//! writer.begin("model.safetensors", Some(bytes.len() as u64))?;
//! let mut rest = &bytes[..];
//! while !rest.is_empty() {
//!     let n = writer.write(rest)?;
//!     if n == 0 {
//!         writer.writable().await?; // the load is allocating the tensors
//!     }
//!     rest = &rest[n..];
//! }
//! writer.end()?;
//! writer.finish()?;
//! load.await?;
//! # manager.shutdown().await;
//! # Ok(()) }
//! ```

mod shared;
mod write;
mod writer;

pub use shared::StreamSource;
pub(crate) use shared::{Body, Current, Shared};
pub(crate) use write::ended;
pub(crate) use writer::channel;
pub use writer::StreamWriter;
