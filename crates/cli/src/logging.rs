//! The binary's log subscriber: `tracing` events of every crate go to stderr, as text or as JSON
//! lines, so stdout carries only a command's output (`-o json` stays one JSON document).
//! `RUST_LOG` decides what is logged when set; otherwise Pazar's own crates log at `warn` for
//! one-shot commands and `info` for daemons (node, provider), one level more per `-v`, and
//! every other crate at `warn`.

use std::io::{IsTerminal, Write};

use clap::ValueEnum;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::progress;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event for people: time, level, where, message.
    Text,
    /// One JSON object per event (timestamp, level, target, fields.message), for log collectors.
    Json,
}

/// Pazar's crates, whose level `-v` raises.
const OURS: &[&str] = &[
    "pazar",
    "pazar_node",
    "pazar_provider",
    "pazar_runtime",
    "pazar_client",
    "pazar_store",
    "pazar_ledger",
    "pazar_sdl",
];

/// The filter used when `RUST_LOG` is not set.
pub fn default_directives(daemon: bool, verbose: u8) -> String {
    let levels = ["warn", "info", "debug", "trace"];
    let base = usize::from(daemon) + usize::from(verbose);
    let ours = levels[base.min(levels.len() - 1)];
    let mut d = String::from("warn");
    for c in OURS {
        d.push_str(&format!(",{c}={ours}"));
    }
    d
}

/// Writes each event whole to stderr, with any progress bar cleared around it so the two never
/// tear each other's lines.
#[derive(Clone, Copy)]
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        progress::suspend(|| std::io::stderr().lock().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Stderr;
    fn make_writer(&'a self) -> Stderr {
        Stderr
    }
}

/// Installs the subscriber for the rest of the process. A bad `RUST_LOG` is reported and the
/// default filter used instead, so a typo never silences a daemon.
pub fn init(format: LogFormat, daemon: bool, verbose: u8) {
    let default = default_directives(daemon, verbose);
    let (filter, bad) = match std::env::var("RUST_LOG") {
        Ok(s) if !s.trim().is_empty() => match EnvFilter::try_new(&s) {
            Ok(f) => (f, None),
            Err(e) => (
                EnvFilter::new(&default),
                Some(format!("RUST_LOG={s:?} is not a filter ({e})")),
            ),
        },
        _ => (EnvFilter::new(&default), None),
    };
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stderr)
        .with_ansi(color && format == LogFormat::Text);
    // Another subscriber can only exist if this is called twice; the first one stays.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Some(bad) = bad {
        tracing::warn!("{bad}; using {default}");
    }
}

#[cfg(test)]
mod tests {
    use super::default_directives;

    #[test]
    fn daemons_log_info_and_each_v_raises_pazar_s_crates_only() {
        assert!(default_directives(false, 0).starts_with("warn,pazar=warn,"));
        assert!(default_directives(true, 0).contains("pazar_provider=info"));
        assert!(default_directives(false, 2).contains("pazar_node=debug"));
        assert!(default_directives(true, 9).contains("pazar=trace"));
        assert!(default_directives(true, 9).starts_with("warn,"));
    }
}
