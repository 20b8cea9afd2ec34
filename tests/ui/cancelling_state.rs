// There is no Cancelling state: cancelling is an outcome of Loading.
use model_manager::state::typed::Cancelling;
use model_manager::State;

fn main() {
    let _ = State::Cancelling;
    let _: Option<Cancelling> = None;
}
