//! Header and receipt-proof verification throughput on one core, each beside bare
//! keccak256 over the same bytes (the bound), then the ratios from one shared run.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group};
use ferry_light_client::bench;

fn headers(c: &mut Criterion) {
    let f = bench::fixtures(1_001, 200);
    let mut group = c.benchmark_group("headers");
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("verify", |b| b.iter(|| bench::verify_headers(&f)));
    group.bench_function("keccak-bound", |b| b.iter(|| bench::keccak_headers(&f)));
    group.finish();
}

fn proofs(c: &mut Criterion) {
    let f = bench::fixtures(2, 200);
    let mut group = c.benchmark_group("receipt-proofs");
    group.throughput(Throughput::Elements(f.proofs.len() as u64));
    group.bench_function("verify", |b| b.iter(|| bench::verify_proofs(&f)));
    group.bench_function("keccak-bound", |b| b.iter(|| bench::keccak_proofs(&f)));
    group.finish();
}

criterion_group!(benches, headers, proofs);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let report = bench::run(&bench::fixtures(1_001, 200), Duration::from_secs(2));
    println!(
        "headers: {:.0}/s verified, keccak bound {:.0}/s ({:.2}x of the bound)",
        report.headers_per_s,
        report.keccak_headers_per_s,
        report.headers_per_s / report.keccak_headers_per_s
    );
    println!(
        "receipt proofs: {:.0}/s verified, keccak bound {:.0}/s ({:.2}x of the bound)",
        report.proofs_per_s,
        report.keccak_proofs_per_s,
        report.proofs_per_s / report.keccak_proofs_per_s
    );
}
