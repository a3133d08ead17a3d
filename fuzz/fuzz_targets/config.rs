//! Any text as the config file: a config or an error naming the key, never a panic.
#![no_main]
use gpucost_core::config::{resolve, Layer, Origin};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let origin = Origin::File("fuzz.toml".into());
    // The agent's parse (which tracks the key and the position) accepts exactly what plain serde
    // does.
    let parsed = Layer::from_file_text(text, origin.clone());
    assert_eq!(parsed.is_ok(), toml::from_str::<Layer>(text).is_ok());
    match parsed {
        Ok(layer) => {
            if let Err(e) = resolve(&[(origin, layer)]) {
                assert!(!e.key.is_empty() && !e.problem.is_empty());
            }
        }
        Err(e) => assert!(!e.key.is_empty() && !e.problem.is_empty()),
    }
});
