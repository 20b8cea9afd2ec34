// Ready --load--> Loading is not an edge: a switch goes through Unloading.
use model_manager::state::typed::{Idle, Loading};
use model_manager::ModelSource;

fn main() {
    let ready = Idle::new().load(ModelSource::file("a").into(), 1).finish();
    let loading: Loading = ready.load(ModelSource::file("b").into(), 2);
    let _ = loading;
}
