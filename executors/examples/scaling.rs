//! The machine's own ceiling: plain revm on one thread, then the same batch on two
//! threads at once (each with its own copy of the state), interleaved; medians.
use ferry_executors::bench;
use std::sync::{Arc, Barrier};

fn main() {
    let own = std::env::var("SHARED").is_err();
    let Ok(f) = bench::Fixture::new(2002) else { return };
    let f = Arc::new(f);
    let g = if own { Arc::new(bench::Fixture::new(2002).unwrap()) } else { f.clone() };
    for name in ["erc20", "heavy", "raw-transfer", "mailbox-delivery"] {
        let w1 = bench::workloads(&f, 1000).into_iter().find(|w| w.name == name).unwrap().txs;
        let w2 = bench::workloads(&g, 1000).into_iter().find(|w| w.name == name).unwrap().txs;
        let (mut single, mut dual) = (Vec::new(), Vec::new());
        for _ in 0..21 {
            single.push(bench::plain_revm(f.state.clone(), &f.ctx, &w1).0);
            let barrier = Arc::new(Barrier::new(2));
            let (g2, w2c, b2) = (g.clone(), w2.clone(), barrier.clone());
            let other = std::thread::spawn(move || {
                b2.wait();
                bench::plain_revm(g2.state.clone(), &g2.ctx, &w2c).0
            });
            barrier.wait();
            let a = bench::plain_revm(f.state.clone(), &f.ctx, &w1).0;
            let b = other.join().unwrap();
            dual.push(a.max(b));
        }
        single.sort_by(f64::total_cmp);
        dual.sort_by(f64::total_cmp);
        eprintln!(
            "{name}: one {:.2} ms, two at once {:.2} ms: two cores do {:.2}x the work",
            single[10] * 1e3,
            dual[10] * 1e3,
            2.0 * single[10] / dual[10]
        );
    }
}
