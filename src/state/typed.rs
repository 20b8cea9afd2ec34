//! The lifecycle as types: each state is a type, each transition consumes its
//! source state and returns its target.
//!
//! The only way to obtain a [`Ready`] is [`Loading::finish`]; the only way to
//! obtain an [`Unloading`] is [`Ready::unload`]; and so on for every edge of
//! the lifecycle. No state value can be built outside this module, and none is
//! `Clone`, so a consumed state cannot be used again.
//!
//! ```
//! use model_manager::state::typed::Idle;
//! use model_manager::ModelSource;
//!
//! let idle = Idle::new();
//! let loading = idle.load(ModelSource::file("unet.safetensors").into(), 1);
//! let ready = loading.finish();
//! let unloading = ready.unload(2);
//! let idle = unloading.drained();
//! # let _ = idle;
//! ```
//!
//! Illegal moves do not compile:
//!
//! ```compile_fail
//! use model_manager::state::typed::Idle;
//! let ready = Idle::new().finish(); // Idle has no `finish`
//! ```

use std::sync::Arc;

use crate::{Error, ModelSource};

/// Identity of a model: what was asked to be loaded.
pub type ModelId = Arc<ModelSource>;

/// Nothing is loaded.
#[derive(Debug)]
#[must_use]
pub struct Idle {
    _sealed: (),
}

/// A model is being loaded.
#[derive(Debug)]
#[must_use]
pub struct Loading {
    model: ModelId,
    generation: u64,
}

/// A model is loaded and can be leased.
#[derive(Debug)]
#[must_use]
pub struct Ready {
    model: ModelId,
    generation: u64,
}

/// A model is being unloaded: waiting for its leases, then freeing memory.
#[derive(Debug)]
#[must_use]
pub struct Unloading {
    model: ModelId,
    generation: u64,
}

/// The last load failed.
#[derive(Debug)]
#[must_use]
pub struct Failed {
    error: Error,
    generation: u64,
}

impl Idle {
    /// The initial state of every lifecycle.
    pub fn new() -> Idle {
        Idle { _sealed: () }
    }

    /// `Idle --load--> Loading`.
    pub fn load(self, model: ModelId, generation: u64) -> Loading {
        Loading { model, generation }
    }
}

impl Default for Idle {
    fn default() -> Self {
        Idle::new()
    }
}

impl Loading {
    /// `Loading --finished--> Ready`.
    pub fn finish(self) -> Ready {
        Ready {
            model: self.model,
            generation: self.generation,
        }
    }

    /// `Loading --cancelled--> Idle`. There is no cancelling state: cancelling
    /// is an outcome of loading.
    pub fn cancel(self) -> Idle {
        Idle::new()
    }

    /// `Loading --error--> Failed`.
    pub fn fail(self, error: Error) -> Failed {
        Failed {
            error,
            generation: self.generation,
        }
    }

    /// The model being loaded.
    pub fn model(&self) -> &ModelId {
        &self.model
    }

    /// The generation at which this load was accepted.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Ready {
    /// `Ready --unload--> Unloading`. Switching to another model goes through
    /// here: there is no edge from `Ready` to `Loading`.
    pub fn unload(self, generation: u64) -> Unloading {
        Unloading {
            model: self.model,
            generation,
        }
    }

    /// The loaded model.
    pub fn model(&self) -> &ModelId {
        &self.model
    }

    /// The generation at which the load that produced this state was accepted.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Unloading {
    /// `Unloading --drained--> Idle`: every lease is released and memory freed.
    pub fn drained(self) -> Idle {
        Idle::new()
    }

    /// The model being unloaded.
    pub fn model(&self) -> &ModelId {
        &self.model
    }

    /// The generation at which the unload was accepted.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Failed {
    /// `Failed --load--> Loading`: a retry, or another model.
    pub fn load(self, model: ModelId, generation: u64) -> Loading {
        Loading { model, generation }
    }

    /// `Failed --reset--> Idle`.
    pub fn reset(self) -> Idle {
        Idle::new()
    }

    /// Why the load failed.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The generation of the load that failed.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}
