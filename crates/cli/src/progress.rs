//! Progress on stderr while a command waits: spinners and byte bars (indicatif) when stderr is a
//! terminal, plain lines otherwise (so CI logs stay readable), nothing under `-o json`. What a
//! command *answers* goes to stdout, never through here.
//!
//! The mode is chosen once by `main` from `--output` and the terminal; the tenant workflows'
//! [`Progress`] events are rendered by [`View`].

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use pazar_api::provider::{LeaseStatus, ServiceState};
use pazar_client::deploy::Progress;

use crate::lease_cmd::{printable, status_text};
use crate::Output;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `-o json`: stdout is for the JSON answer and stderr shows no progress.
    Quiet,
    /// stderr is not a terminal: one line per step.
    Lines,
    /// stderr is a terminal: spinners and bars redrawn in place.
    Bars,
}

static MODE: OnceLock<Mode> = OnceLock::new();
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// Chooses the mode for the rest of the process (the first call wins).
pub fn set_mode(output: Output) {
    let mode = match output {
        Output::Json => Mode::Quiet,
        Output::Text if std::io::stderr().is_terminal() => Mode::Bars,
        Output::Text => Mode::Lines,
    };
    let _ = MODE.set(mode);
}

pub fn mode() -> Mode {
    // Nothing chose (a library caller, a test): plain lines are safe everywhere.
    *MODE.get().unwrap_or(&Mode::Lines)
}

fn bars() -> &'static MultiProgress {
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// Runs `f` with the bars cleared from the terminal (for a log line), then draws them again.
pub fn suspend<T>(f: impl FnOnce() -> T) -> T {
    match BARS.get() {
        Some(m) => m.suspend(f),
        None => f(),
    }
}

/// A line of progress on stderr (above any bars); nothing under `-o json`.
pub fn line(msg: &str) {
    match mode() {
        Mode::Quiet => {}
        Mode::Lines => eprintln!("{msg}"),
        Mode::Bars => {
            let _ = bars().println(msg);
        }
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} {elapsed:.dim}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template("  {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// A spinner that says what is awaited; in line mode the message is printed once; gone when
/// dropped.
pub struct Spinner(Option<ProgressBar>);

impl Spinner {
    pub fn new(msg: &str) -> Spinner {
        match mode() {
            Mode::Quiet => Spinner(None),
            Mode::Lines => {
                eprintln!("{msg}…");
                Spinner(None)
            }
            Mode::Bars => {
                let pb = bars().add(ProgressBar::new_spinner());
                pb.set_style(spinner_style());
                pb.set_message(msg.to_string());
                pb.enable_steady_tick(Duration::from_millis(100));
                Spinner(Some(pb))
            }
        }
    }

    /// A new message in place (terminal only: in line mode it would be noise every poll).
    pub fn set(&self, msg: &str) {
        if let Some(pb) = &self.0 {
            pb.set_message(msg.to_string());
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(pb) = self.0.take() {
            pb.finish_and_clear();
            bars().remove(&pb);
        }
    }
}

/// Runs `f` under a spinner saying `msg`.
pub fn with_spinner<T>(msg: &str, f: impl FnOnce() -> T) -> T {
    let _s = Spinner::new(msg);
    f()
}

/// A short form of a lease id for progress lines: `DSEQ/GSEQ/OSEQ`.
fn short(lease: &pazar_types::BidId) -> String {
    format!("{}/{}/{}", lease.dseq, lease.gseq, lease.oseq)
}

/// One service's state in a progress line: `web 0/2 pulling`.
fn services_line(st: &LeaseStatus) -> String {
    st.services
        .iter()
        .map(|s| {
            let state = serde_json::to_value(s.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            format!("{} {}/{} {state}", printable(&s.name, &[]), s.running, s.replicas)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Renders a tenant workflow's [`Progress`]: what is awaited on a spinner, each bid and lease as a
/// line, image pulls as byte bars, and the final status of a serving lease on stdout (text only).
pub struct View {
    spinner: Option<Spinner>,
    bids: usize,
    /// Byte bars of image pulls under way, by lease and service.
    pulls: BTreeMap<(String, String), ProgressBar>,
    /// What line mode last said of each lease (services' states and pull quarters), so a line
    /// is printed only when it changes.
    said: BTreeMap<String, String>,
    /// Whether the final status is printed to stdout on `Serving` (text output).
    print_serving: bool,
}

impl View {
    pub fn new(print_serving: bool) -> View {
        View {
            spinner: None,
            bids: 0,
            pulls: BTreeMap::new(),
            said: BTreeMap::new(),
            print_serving,
        }
    }

    /// Shows `msg` as what is awaited now.
    pub fn waiting(&mut self, msg: &str) {
        match &self.spinner {
            Some(s) if mode() == Mode::Bars => s.set(msg),
            _ => self.spinner = Some(Spinner::new(msg)),
        }
    }

    fn done_waiting(&mut self) {
        self.spinner = None;
    }

    fn clear_pulls(&mut self, lease: Option<&str>) {
        let keys: Vec<_> = self
            .pulls
            .keys()
            .filter(|(l, _)| lease.is_none_or(|x| x == l))
            .cloned()
            .collect();
        for k in keys {
            if let Some(pb) = self.pulls.remove(&k) {
                pb.finish_and_clear();
                bars().remove(&pb);
            }
        }
    }

    fn starting(&mut self, lease: &pazar_types::BidId, st: &LeaseStatus) {
        let id = short(lease);
        match mode() {
            Mode::Quiet => {}
            Mode::Bars => {
                self.waiting(&format!("lease {id} starting: {}", services_line(st)));
                let mut live = Vec::new();
                for s in &st.services {
                    let Some(p) = s.pull.as_ref().filter(|_| s.state == ServiceState::Pulling) else {
                        continue;
                    };
                    let key = (id.clone(), s.name.clone());
                    let pb = self.pulls.entry(key.clone()).or_insert_with(|| {
                        let pb = bars().add(ProgressBar::new(p.total.max(1)));
                        pb.set_style(bytes_style());
                        pb.set_message(format!(
                            "{}: pulling {}",
                            printable(&s.name, &[]),
                            printable(&p.image, &[])
                        ));
                        pb
                    });
                    // Layers announce their sizes as the pull goes: the total grows.
                    pb.set_length(p.total.max(p.bytes).max(1));
                    pb.set_position(p.bytes);
                    live.push(key);
                }
                let gone: Vec<_> = self
                    .pulls
                    .keys()
                    .filter(|k| k.0 == id && !live.contains(k))
                    .cloned()
                    .collect();
                for k in gone {
                    if let Some(pb) = self.pulls.remove(&k) {
                        pb.finish_and_clear();
                        bars().remove(&pb);
                    }
                }
            }
            Mode::Lines => {
                let mut now = services_line(st);
                for s in &st.services {
                    if let Some(p) = s.pull.as_ref().filter(|_| s.state == ServiceState::Pulling) {
                        // A quarter at a time: a line per poll would bury the log.
                        let quarter = (p.bytes.saturating_mul(4)).checked_div(p.total).unwrap_or(0).min(4);
                        now.push_str(&format!(
                            "; {}: pulling {} ({} of {}, {}%)",
                            printable(&s.name, &[]),
                            printable(&p.image, &[]),
                            HumanBytes(p.bytes),
                            HumanBytes(p.total),
                            quarter * 25
                        ));
                    }
                }
                if self.said.get(&id) != Some(&now) {
                    eprintln!("lease {id} starting: {now}");
                    self.said.insert(id, now);
                }
            }
        }
    }

    /// Renders one event.
    pub fn on(&mut self, p: Progress) {
        match p {
            Progress::Submitted { what, hash } => self.waiting(&format!(
                "{what}: waiting for tx {} to be committed",
                &hash[..hash.len().min(12)]
            )),
            // The command says what it created; bids are awaited only if it goes on.
            Progress::DeploymentCreated { .. } => self.done_waiting(),
            Progress::Bid { id, price } => {
                self.bids += 1;
                line(&format!(
                    "  bid from {} for group {}: {} {} per block",
                    id.provider, id.gseq, price.amount, price.denom
                ));
                self.waiting(&format!("waiting for bids ({} so far)", self.bids));
            }
            Progress::BidWindow { secs } => {
                self.waiting(&format!("every group has a bid; waiting {secs} s for cheaper ones"))
            }
            Progress::Leased { id, price } => {
                self.done_waiting();
                line(&format!("leased {id} at {price} per block"));
            }
            Progress::SendingManifest { lease } => self.waiting(&format!("sending the manifest to {}", lease.provider)),
            Progress::ManifestAccepted { lease } => {
                self.done_waiting();
                line(&format!("the provider accepted the manifest of {}", short(&lease)));
                self.waiting(&format!("lease {} starting", short(&lease)));
            }
            Progress::Starting { lease, status } => self.starting(&lease, &status),
            Progress::Serving { lease, status } => {
                self.clear_pulls(Some(&short(&lease)));
                self.done_waiting();
                line(&format!("lease {} serves", short(&lease)));
                if self.print_serving {
                    println!("{}", status_text(&status));
                }
            }
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        self.clear_pulls(None);
    }
}
