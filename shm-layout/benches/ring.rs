//! Micro-benchmarks of the ring's operations in one process: send, batch send,
//! claim + read + reclaim, and the futex-free notify. `make microbench`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shm_layout::event;
use shm_layout::group::{Member, Step};
use shm_layout::layout::Geometry;
use shm_layout::ring::Sender;
use shm_layout::{BrokerRegion, Region};

const ME: Sender = Sender {
    client: 1,
    generation: 1,
};

struct Bench(BrokerRegion);
impl Drop for Bench {
    fn drop(&mut self) {
        let _ = Region::unlink(self.0.name());
    }
}

fn region(tag: &str) -> Bench {
    let name = format!("/mk-bench-{tag}-{}", std::process::id());
    let _ = Region::unlink(&name);
    let geometry = Geometry {
        slots: 4096,
        slot_size: 1024,
        max_message: 1 << 20,
        max_clients: 8,
        max_groups: 2,
        redeliveries_per_group: 4,
    };
    Bench(Region::create(&name, geometry, [1, 1], 1).expect("region"))
}

fn benches(c: &mut Criterion) {
    let payload = [7u8; 64];
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Elements(1));

    let b = region("send");
    let r = &b.0;
    g.bench_function("send 64 B + reclaim", |bench| {
        bench.iter(|| {
            let o = r
                .send(ME, None, black_box(&payload), 0, || false, None)
                .unwrap();
            r.reclaim(o + 1).unwrap();
        })
    });

    let b = region("batch");
    let r = &b.0;
    let batch: Vec<(Option<&[u8]>, &[u8])> = (0..64).map(|_| (None, &payload[..])).collect();
    g.throughput(Throughput::Elements(64));
    g.bench_function("send_batch 64 × 64 B + reclaim", |bench| {
        bench.iter(|| {
            let mut last = 0;
            r.send_batch(ME, black_box(&batch), 0, || false, None, |o| last = o)
                .unwrap();
            r.reclaim(last + 1).unwrap();
        })
    });
    g.throughput(Throughput::Elements(1));

    let b = region("claim");
    let r = &b.0;
    let grp = r.group(0).unwrap();
    let me = r.client(2).unwrap();
    r.reset_group(grp, 0);
    r.clear_ranks(me);
    r.install_rotation(grp, &[me]);
    let mut member = Member::default();
    g.bench_function("send + take + read + reclaim", |bench| {
        bench.iter(|| {
            let o = r.send(ME, None, &payload, 0, || false, None).unwrap();
            let Step::Take(run) = member.next_step(grp, me, r.next_offset(), 1) else {
                panic!("alone in the group")
            };
            black_box(r.read_record(run.start).unwrap().payload);
            r.reclaim(o + 1).unwrap();
        })
    });

    g.bench_function("notify with nobody asleep", |bench| {
        bench.iter(|| event::notify(black_box(&r.header().published)))
    });
    g.finish();
}

criterion_group!(ring, benches);
criterion_main!(ring);
