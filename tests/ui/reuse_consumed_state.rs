// A transition consumes its source: the same Loading cannot both finish and
// be cancelled.
use model_manager::state::typed::Idle;
use model_manager::ModelSource;

fn main() {
    let loading = Idle::new().load(ModelSource::file("a").into(), 1);
    let ready = loading.finish();
    let idle = loading.cancel();
    let _ = (ready, idle);
}
