//! Errors as JS values: an `Error` with a numeric `code` (the core's stable
//! [`ErrorCode`](model_manager::ErrorCode), the same values as the C API's
//! `mm_result`) and a `codeName`. The JS wrapper re-throws them as its
//! `ModelManagerError` class.

use js_sys::Reflect;
use model_manager::{Error, ErrorCode};
use wasm_bindgen::prelude::*;

/// A JS `Error` with `code` and `codeName` set.
pub(crate) fn js_error(code: ErrorCode, message: &str) -> JsValue {
    let error = js_sys::Error::new(message);
    // Setting a property on a fresh plain Error cannot fail.
    let _ = Reflect::set(&error, &"code".into(), &(code as u32).into());
    let _ = Reflect::set(&error, &"codeName".into(), &code.name().into());
    error.into()
}

/// The core's error as a JS `Error`.
pub(crate) fn to_js(error: &Error) -> JsValue {
    js_error(error.code(), &error.to_string())
}

/// `Result` of the core, with the error translated for JS.
pub(crate) fn js<T>(result: model_manager::Result<T>) -> Result<T, JsValue> {
    result.map_err(|e| to_js(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_are_the_cores() {
        let codes = [
            (Error::InvalidArgument(String::new()), "InvalidArgument", 1),
            (Error::Cancelled, "Cancelled", 3),
            (Error::Superseded, "Superseded", 4),
            (Error::ShutDown, "ShutDown", 15),
            (Error::Timeout, "Timeout", 17),
        ];
        for (error, name, value) in codes {
            assert_eq!(error.code().name(), name);
            assert_eq!(error.code() as u32, value);
        }
    }
}
