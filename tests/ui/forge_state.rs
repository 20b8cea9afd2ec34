// State values can only be made by the lifecycle's transitions.
use model_manager::state::typed::{Ready, Unloading};
use model_manager::ModelSource;
use std::sync::Arc;

fn main() {
    let ready = Ready {
        model: Arc::new(ModelSource::file("a")),
        generation: 1,
    };
    let unloading = Unloading { model: Arc::new(ModelSource::file("a")), generation: 2 };
    let _ = (ready, unloading);
}
