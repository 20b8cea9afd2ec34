//! The lifecycle's vocabulary: its states ([`State`]) and the commands
//! that move it ([`Command`]), each with the one table of names that
//! `Display`, the C binding and the JavaScript binding use. The states'
//! transitions and the machine that makes them live in [`crate::state`].
//!
//! May import: nothing of the crate (errors name states and commands).

use std::ffi::CStr;
use std::fmt;

/// The lifecycle state, as a plain value (what C and JS see).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Nothing is loaded.
    Idle = 0,
    /// A model is being loaded.
    Loading = 1,
    /// A model is loaded and can be leased.
    Ready = 2,
    /// A model is being unloaded (waiting for leases, then freeing memory).
    Unloading = 3,
    /// The last load failed; see [`Snapshot::error`].
    Failed = 4,
}

impl State {
    /// Every state, in numeric order.
    pub const ALL: [State; 5] = [
        State::Idle,
        State::Loading,
        State::Ready,
        State::Unloading,
        State::Failed,
    ];

    /// The state's name, NUL-terminated: the one table of names, used by
    /// `Display`, the C binding and the JS binding alike.
    pub const fn c_name(self) -> &'static CStr {
        match self {
            State::Idle => c"idle",
            State::Loading => c"loading",
            State::Ready => c"ready",
            State::Unloading => c"unloading",
            State::Failed => c"failed",
        }
    }

    /// The state's name (`"idle"`, `"loading"`, ...).
    pub const fn name(self) -> &'static str {
        name_of(self.c_name())
    }

    /// The state with this numeric value, if any.
    pub const fn from_u32(value: u32) -> Option<State> {
        if (value as usize) < State::ALL.len() {
            Some(State::ALL[value as usize])
        } else {
            None
        }
    }
}

/// A name from the table as `&str` (the table holds ASCII only).
const fn name_of(name: &'static CStr) -> &'static str {
    match std::str::from_utf8(name.to_bytes()) {
        Ok(name) => name,
        Err(_) => "",
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What caused a transition, or what was refused.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// A load was requested.
    Load = 0,
    /// A load finished.
    Finish = 1,
    /// A load was cancelled (by `cancel`, `unload`, a newer load or shutdown).
    Cancel = 2,
    /// A load failed.
    Fail = 3,
    /// An unload was requested.
    Unload = 4,
    /// Every lease was released and the memory freed.
    Drain = 5,
    /// A failure was acknowledged.
    Reset = 6,
}

impl Command {
    /// Every command, in numeric order.
    pub const ALL: [Command; 7] = [
        Command::Load,
        Command::Finish,
        Command::Cancel,
        Command::Fail,
        Command::Unload,
        Command::Drain,
        Command::Reset,
    ];

    /// The command's name, NUL-terminated (the one table of names).
    pub const fn c_name(self) -> &'static CStr {
        match self {
            Command::Load => c"load",
            Command::Finish => c"finish loading",
            Command::Cancel => c"cancel",
            Command::Fail => c"fail",
            Command::Unload => c"unload",
            Command::Drain => c"drain",
            Command::Reset => c"reset",
        }
    }

    /// The command's name (`"load"`, `"finish loading"`, ...).
    pub const fn name(self) -> &'static str {
        name_of(self.c_name())
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
