// Idle --finish--> Ready is not an edge: only a Loading can finish.
use model_manager::state::typed::{Idle, Ready};

fn main() {
    let ready: Ready = Idle::new().finish();
    let _ = ready;
}
