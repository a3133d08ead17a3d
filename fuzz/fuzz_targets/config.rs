//! Any text as the config file: a config or an error naming the key, never a panic.
#![no_main]
use gpucost_core::config::{resolve, Layer, Origin};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(layer) = toml::from_str::<Layer>(text) {
        if let Err(e) = resolve(&[(Origin::File("fuzz.toml".into()), layer)]) {
            assert!(!e.key.is_empty() && !e.problem.is_empty());
        }
    }
});
