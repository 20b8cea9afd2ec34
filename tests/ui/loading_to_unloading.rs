// Loading --unload--> Unloading is not an edge: a load is cancelled instead.
use model_manager::state::typed::{Idle, Unloading};
use model_manager::ModelSource;

fn main() {
    let loading = Idle::new().load(ModelSource::file("a").into(), 1);
    let unloading: Unloading = loading.unload(2);
    let _ = unloading;
}
