//! The configuration files: onaird's `onair.toml` and onair-signal's `onair-signal.toml`.
//!
//! Every input is parsed as both. Besides "no panic, no hang", what `--check-config` and the
//! daemons rely on:
//! - an accepted file validates, and writes back to TOML that reads as the same configuration;
//! - a refused file gets at least one error, each with a message, the origin it was given, a
//!   line and column inside the text when it has one, and the errors in the order of the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onair_config::{Config, ConfigErrors, SignalConfig};

const ORIGIN: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    // The daemons refuse a file that is not UTF-8 before parsing it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str(text, ORIGIN) {
        Ok(config) => {
            config.validate().expect("an accepted onair.toml validates");
            let written = toml::to_string(&config).expect("a configuration writes as TOML");
            let reread = Config::from_toml_str(&written, ORIGIN)
                .unwrap_or_else(|e| panic!("written config refused:\n{written}\n{e}"));
            assert_eq!(reread, config, "written as:\n{written}");
        }
        Err(errors) => check_errors(text, &errors),
    }
    match SignalConfig::from_toml_str(text, ORIGIN) {
        Ok(config) => {
            config
                .validate()
                .expect("an accepted onair-signal.toml validates");
            let written = toml::to_string(&config).expect("a configuration writes as TOML");
            let reread = SignalConfig::from_toml_str(&written, ORIGIN)
                .unwrap_or_else(|e| panic!("written config refused:\n{written}\n{e}"));
            assert_eq!(reread, config, "written as:\n{written}");
        }
        Err(errors) => check_errors(text, &errors),
    }
});

fn check_errors(text: &str, errors: &ConfigErrors) {
    assert!(errors.iter().next().is_some(), "an error without errors");
    let lines = text.split('\n').count();
    let mut last = (0, 0);
    for error in errors {
        assert_eq!(error.origin, ORIGIN, "{error}");
        assert!(
            !error.message.is_empty(),
            "an error without a message: {error:?}"
        );
        if let Some(line) = error.line {
            assert!(
                (1..=lines).contains(&line),
                "line {line} of {lines}: {error}"
            );
            let column = error.column.unwrap_or(1);
            let width = text
                .split('\n')
                .nth(line - 1)
                .map_or(0, |l| l.chars().count());
            assert!(
                (1..=width + 1).contains(&column),
                "column {column} of {width}: {error}"
            );
            assert!((line, column) >= last, "errors out of order: {errors}");
            last = (line, column);
        }
        // Displays without panicking, and names the origin.
        assert!(error.to_string().starts_with(ORIGIN));
    }
}
