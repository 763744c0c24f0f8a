//! Where the process's CPU goes, by pipeline stage.
//!
//! Each role's task runs [`Metered`], so every poll of it is charged to its stage;
//! synchronous sections inside it that belong to another stage (signing inside the
//! watcher, the store inside every role) are charged to theirs with [`scope`]. Time is
//! the thread's own CPU clock, read when a stage is entered and left, so a section is
//! charged exactly what its thread ran, never the time it spent waiting. Work done on
//! threads or tasks a stage hands off to (the NATS and HTTP clients' connection tasks)
//! stays unattributed: `ferry_stage_cpu_seconds_total` leaves it to the process total.

use std::{
    cell::Cell,
    future::Future,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    task::{Context, Poll},
};

use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
};

/// A stage of the pipeline that CPU is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Following headers, verifying them, proving messages (watchers).
    Watch,
    /// Signing attestations (validators).
    Sign,
    /// Checking signatures and building quorum certificates (collector).
    Collect,
    /// Encoding, decoding and exchanging bus messages.
    Nats,
    /// Pre-executing deliveries (admission and prediction, the executor's threads included).
    Execute,
    /// Sending delivery transactions and following them to finality.
    Submit,
    /// Reading and writing the redb store.
    Store,
}

impl Stage {
    /// Every stage, in the order of their counters.
    pub const ALL: [Stage; 7] =
        [Stage::Watch, Stage::Sign, Stage::Collect, Stage::Nats, Stage::Execute, Stage::Submit, Stage::Store];

    /// The stage's label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Watch => "watch",
            Stage::Sign => "sign",
            Stage::Collect => "collect",
            Stage::Nats => "nats",
            Stage::Execute => "execute",
            Stage::Submit => "submit",
            Stage::Store => "store",
        }
    }
}

/// Nanoseconds of CPU charged to each stage, in [`Stage::ALL`] order.
static CHARGED: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];

thread_local! {
    /// The stage this thread is running for, and its CPU clock when it last changed.
    static CURRENT: Cell<Option<(Stage, u64)>> = const { Cell::new(None) };
}

pub use ferry_executors::clock::{process_cpu_ns, thread_cpu_ns};

fn charge(stage: Stage, nanos: u64) {
    // `ALL` lists the stages in declaration order: a stage's discriminant is its index.
    CHARGED[stage as usize].fetch_add(nanos, Ordering::Relaxed);
}

/// Charges `seconds` of CPU spent on threads of `stage`'s own (an executor's workers).
pub fn add(stage: Stage, seconds: f64) {
    if seconds > 0.0 {
        charge(stage, (seconds * 1e9) as u64);
    }
}

/// Runs `f` with its CPU charged to `stage` (and not to the stage around it).
pub fn scope<R>(stage: Stage, f: impl FnOnce() -> R) -> R {
    let start = thread_cpu_ns();
    let outer = CURRENT.with(|c| c.replace(Some((stage, start))));
    if let Some((outer_stage, since)) = outer {
        charge(outer_stage, start.saturating_sub(since));
    }
    let result = f();
    let end = thread_cpu_ns();
    if let Some((inner, since)) = CURRENT.with(Cell::get) {
        charge(inner, end.saturating_sub(since));
    }
    CURRENT.with(|c| c.set(outer.map(|(s, _)| (s, end))));
    result
}

thread_local! {
    /// This thread's CPU clock when it last woke ([`resume`]).
    static WOKEN: Cell<u64> = const { Cell::new(0) };
}

/// Marks a thread of a stage's own waking (a runtime's unpark hook).
pub fn resume() {
    WOKEN.with(|w| w.set(thread_cpu_ns()));
}

/// Charges `stage` what this thread ran since it last woke (a runtime's park hook).
pub fn pause(stage: Stage) {
    let now = thread_cpu_ns();
    let woken = WOKEN.with(|w| w.replace(now));
    if woken > 0 {
        charge(stage, now.saturating_sub(woken));
    }
}

/// CPU seconds charged to each stage so far.
pub fn charged() -> Vec<(Stage, f64)> {
    Stage::ALL.iter().zip(&CHARGED).map(|(s, n)| (*s, n.load(Ordering::Relaxed) as f64 * 1e-9)).collect()
}

/// A future whose every poll is charged to a stage.
#[derive(Debug)]
pub struct Metered<F> {
    stage: Stage,
    inner: Pin<Box<F>>,
}

/// `future`, its polls charged to `stage`.
pub fn metered<F: Future>(stage: Stage, future: F) -> Metered<F> {
    Metered { stage, inner: Box::pin(future) }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let stage = self.stage;
        scope(stage, || self.inner.as_mut().poll(cx))
    }
}

/// `ferry_stage_cpu_seconds_total{stage}`, read from the counters at each scrape.
#[derive(Debug)]
pub(crate) struct StageCpuCollector {
    desc: Desc,
}

const NAME: &str = "ferry_stage_cpu_seconds_total";
const HELP: &str = "CPU seconds this process spent in each pipeline stage (work of the NATS and HTTP clients' own tasks is not attributed).";

impl StageCpuCollector {
    pub(crate) fn new() -> Result<Self, prometheus::Error> {
        let desc = Desc::new(NAME.into(), HELP.into(), vec!["stage".into()], Default::default())?;
        Ok(Self { desc })
    }
}

impl Collector for StageCpuCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let opts = prometheus::Opts::new(NAME, HELP);
        let Ok(counters) = prometheus::CounterVec::new(opts, &["stage"]) else { return Vec::new() };
        for (stage, seconds) in charged() {
            counters.with_label_values(&[stage.as_str()]).inc_by(seconds);
        }
        counters.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(nanos: u64) {
        let start = thread_cpu_ns();
        while thread_cpu_ns() - start < nanos {
            std::hint::black_box(0);
        }
    }

    fn of(stage: Stage) -> f64 {
        charged().into_iter().find(|(s, _)| *s == stage).map_or(0.0, |(_, v)| v)
    }

    #[test]
    fn nested_scopes_charge_each_stage_its_own_time() {
        let (sign0, watch0) = (of(Stage::Sign), of(Stage::Watch));
        scope(Stage::Watch, || {
            spin(20_000_000);
            scope(Stage::Sign, || spin(30_000_000));
            spin(20_000_000);
        });
        let (sign, watch) = (of(Stage::Sign) - sign0, of(Stage::Watch) - watch0);
        // Other tests may charge these stages at the same time: bounds from below, and
        // the inner section is never charged to the outer one.
        assert!(sign >= 0.030, "sign charged {sign}");
        assert!(watch >= 0.040, "watch charged {watch}");
        assert!(process_cpu_ns() >= thread_cpu_ns());
    }
}
