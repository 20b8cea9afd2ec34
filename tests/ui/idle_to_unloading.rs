// Idle --unload--> Unloading is not an edge: only a Ready can unload.
use model_manager::state::typed::{Idle, Unloading};

fn main() {
    let unloading: Unloading = Idle::new().unload(1);
    let _ = unloading;
}
