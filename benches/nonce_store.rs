//! How many (key_id, nonce) pairs per second the nonce window records, by
//! how many requests share a commit and by durability mode.
//!
//!   cargo bench --bench nonce_store
//!
//! Each iteration sends `batch` records at once through the real store (the
//! writer thread, WAL, a temporary database file) and waits until all are
//! committed, so the writer groups them into about one transaction.

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::future::join_all;
use keygate::clock::Clock;
use keygate::domain::{AppId, AppName};
use keygate::store::{Durability, PairOutcome, Store, StoreConfig};

static NEXT: AtomicU64 = AtomicU64::new(0);

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    for durability in [Durability::Normal, Durability::Full] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::new(dir.path().join("bench.db"));
        config.durability = durability;
        let store = Store::open(&config, 300, Clock::system()).unwrap();
        let name = AppName::parse("bench").unwrap();
        let app = store.catalog().create_app(&name, "bench").unwrap();
        let app_id = AppId::parse(&app.app_id).unwrap();
        let key_id = store
            .catalog()
            .create_key(&app_id, None, None, "bench")
            .unwrap()
            .key_id;
        let key = runtime.block_on(store.find_key(&key_id)).unwrap().unwrap();
        let remember_until = store.clock().now() + 3600;

        let mut group = c.benchmark_group(format!("nonce_store/{durability:?}").to_lowercase());
        group.sample_size(20);
        for batch in [1u64, 16, 256, 1024] {
            group.throughput(Throughput::Elements(batch));
            group.bench_with_input(
                BenchmarkId::new("rows_per_commit", batch),
                &batch,
                |b, &batch| {
                    b.iter(|| {
                        let nonces: Vec<String> = (0..batch)
                            .map(|_| format!("bench{:024x}", NEXT.fetch_add(1, Ordering::Relaxed)))
                            .collect();
                        runtime.block_on(async {
                            let results = join_all(
                                nonces
                                    .iter()
                                    .map(|n| store.record_nonce(&key, n, remember_until, 0)),
                            )
                            .await;
                            assert!(results
                                .iter()
                                .all(|r| matches!(r, Ok(PairOutcome::Recorded))));
                        })
                    })
                },
            );
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
