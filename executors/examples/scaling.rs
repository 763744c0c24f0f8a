//! The machine's own ceiling for the executor benchmark: plain revm on one thread, then
//! the same batch on two threads at once, each with its own copy of the state,
//! interleaved; prints medians and how much work two cores did
//! (`cargo run --release -p ferry-executors --example scaling`).

use std::sync::{Arc, Barrier};

use ferry_executors::bench;

fn main() {
    let (Ok(f), Ok(g)) = (bench::Fixture::new(2002), bench::Fixture::new(2002)) else { return };
    let (f, g) = (Arc::new(f), Arc::new(g));
    for name in ["raw-transfer", "erc20", "heavy", "mailbox-delivery"] {
        let pick = |fx: &bench::Fixture| bench::workloads(fx, 1000).into_iter().find(|w| w.name == name);
        let (Some(w1), Some(w2)) = (pick(&f), pick(&g)) else { return };
        let (mut single, mut dual) = (Vec::new(), Vec::new());
        for _ in 0..21 {
            single.push(bench::plain_revm(f.state.clone(), &f.ctx, &w1.txs).0);
            let barrier = Arc::new(Barrier::new(2));
            let (g2, txs, b2) = (Arc::clone(&g), w2.txs.clone(), Arc::clone(&barrier));
            let other = std::thread::spawn(move || {
                b2.wait();
                bench::plain_revm(g2.state.clone(), &g2.ctx, &txs).0
            });
            barrier.wait();
            let a = bench::plain_revm(f.state.clone(), &f.ctx, &w1.txs).0;
            let Ok(b) = other.join() else { return };
            dual.push(a.max(b));
        }
        single.sort_by(f64::total_cmp);
        dual.sort_by(f64::total_cmp);
        let (one, two) = (single[10], dual[10]);
        eprintln!(
            "{name:<17} one {:.2} ms, two at once {:.2} ms: two cores do {:.2}x the work",
            one * 1e3,
            two * 1e3,
            2.0 * one / two
        );
    }
}
