// Unloading --finish--> Ready is not an edge: an unload only drains to Idle.
use model_manager::state::typed::{Idle, Ready};
use model_manager::ModelSource;

fn main() {
    let unloading = Idle::new()
        .load(ModelSource::file("a").into(), 1)
        .finish()
        .unload(2);
    let ready: Ready = unloading.finish();
    let _ = ready;
}
