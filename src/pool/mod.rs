//! The pool of several models under one memory budget (issue "Several models
//! under one memory budget"): work in progress. What is here is complete and
//! tested on its own; the pool that uses it is not built yet.

// Used by the pool's admission once it exists; tested on its own until then.
#[allow(dead_code)]
pub(crate) mod evict;
