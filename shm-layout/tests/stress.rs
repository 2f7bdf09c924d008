//! A stress test of the in-region protocol with injected delays: producer threads
//! send through the robust ring lock, consumer threads hand out and take their
//! shares in two groups, and a broker thread keeps changing each group's rotation
//! (freeze, wait for the members to finish, install) while it reclaims slots. Every offset must reach every group exactly once, intact, and the ring
//! (small, so it wraps and pads many times) must never wedge.
//!
//! Why not loom or shuttle: the protocol runs on `#[repr(C)]` std atomics inside a
//! shared mapping, with compile-time size checks; model-checker atomics have other
//! sizes and cannot live there, so a model check would exercise a copy of the
//! algorithm rather than this code. Random delays at every step, many schedules per
//! run, and the multi-process kill tests cover it instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shm_layout::group::{self, Member, Step};
use shm_layout::layout::Geometry;
use shm_layout::ring::Sender;
use shm_layout::{BrokerRegion, Region};

const PRODUCERS: u64 = 3;
const PER_PRODUCER: u64 = 4000;
const GROUPS: u32 = 2;
const CONSUMERS_PER_GROUP: u32 = 3;

/// xorshift: a cheap per-thread source of delays.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Sometimes yields, sometimes spins a little: shuffles the interleavings.
    fn delay(&mut self) {
        match self.next() % 16 {
            0 => std::thread::yield_now(),
            1 => (0..self.next() % 200).for_each(|_| std::hint::spin_loop()),
            _ => {}
        }
    }
}

fn payload(producer: u64, seq: u64) -> Vec<u8> {
    let len = (seq * 37 + producer * 11) % 300;
    let mut p = format!("{producer}:{seq}:").into_bytes();
    p.extend((0..len).map(|i| (i ^ seq ^ producer) as u8));
    p
}

/// Per group, a log behind a lock.
type PerGroup<T> = Arc<Vec<Mutex<Vec<T>>>>;

struct Region0(BrokerRegion);
impl Drop for Region0 {
    fn drop(&mut self) {
        let _ = Region::unlink(self.0.name());
    }
}

#[test]
fn producers_consumers_and_rotations_keep_exactly_once_under_random_delays() {
    let name = format!("/mk-stress-{}", std::process::id());
    let _ = Region::unlink(&name);
    let geometry = Geometry {
        slots: 64,
        slot_size: 64,
        max_message: 512,
        max_clients: 16,
        max_groups: GROUPS,
        redeliveries_per_group: 4,
    };
    let region = Arc::new(Region0(Region::create(&name, geometry, [1, 1], 1).unwrap()));
    let r = &region.0;
    for g in 0..GROUPS {
        r.reset_group(r.group(g).unwrap(), 0);
    }
    let total = PRODUCERS * PER_PRODUCER;
    let consumer_ids: Vec<u32> = (0..GROUPS * CONSUMERS_PER_GROUP).map(|i| 4 + i).collect();
    for &c in &consumer_ids {
        r.clear_ranks(r.client(c).unwrap());
    }
    let initial: Vec<Vec<u32>> = (0..GROUPS)
        .map(|g| {
            consumer_ids[(g * CONSUMERS_PER_GROUP) as usize..][..CONSUMERS_PER_GROUP as usize]
                .to_vec()
        })
        .collect();
    // Per group: (offset, taker) of every offset taken.
    let seen: PerGroup<(u64, u32)> =
        Arc::new((0..GROUPS).map(|_| Mutex::new(Vec::new())).collect());
    // Per group: every rotation installed, as (start, members in rank order).
    let rotations: PerGroup<(u64, Vec<u32>)> =
        Arc::new((0..GROUPS).map(|_| Mutex::new(Vec::new())).collect());
    for (g, members) in initial.iter().enumerate() {
        let entries: Vec<_> = members.iter().map(|&c| r.client(c).unwrap()).collect();
        let (start, _) = r.install_rotation(r.group(g as u32).unwrap(), &entries);
        rotations[g].lock().unwrap().push((start, members.clone()));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(120);

    let mut threads = Vec::new();
    for p in 0..PRODUCERS {
        let region = region.clone();
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(p + 17);
            let sender = Sender {
                client: p as u32,
                generation: 1,
            };
            for seq in 0..PER_PRODUCER {
                rng.delay();
                region
                    .0
                    .send(
                        sender,
                        None,
                        &payload(p, seq),
                        0,
                        || Instant::now() > deadline,
                        None,
                    )
                    .expect("send");
            }
        }));
    }
    for (i, &me) in consumer_ids.iter().enumerate() {
        let (region, seen, stop) = (region.clone(), seen.clone(), stop.clone());
        let g = i as u32 / CONSUMERS_PER_GROUP;
        threads.push(std::thread::spawn(move || {
            let r = &region.0;
            let mut rng = Rng(1000 + i as u64);
            let (entry, client) = (r.group(g).unwrap(), r.client(me).unwrap());
            let mut member = Member::default();
            while !stop.load(Ordering::Acquire) {
                rng.delay();
                let max = 1 + rng.next() % 5;
                let Step::Take(run) = member.next_step(entry, client, r.next_offset(), max) else {
                    std::thread::yield_now();
                    continue;
                };
                for k in 0..run.len {
                    rng.delay();
                    let offset = run.offset(k);
                    let rec = r.read_record(offset).expect("a taken record is readable");
                    let text = String::from_utf8_lossy(rec.payload);
                    let mut parts = text.splitn(3, ':');
                    let (p, s) = (parts.next().unwrap(), parts.next().unwrap());
                    let expected = payload(p.parse().unwrap(), s.parse().unwrap());
                    assert_eq!(rec.payload, expected.as_slice(), "offset {offset} intact");
                    seen[g as usize].lock().unwrap().push((offset, me));
                }
                client.activity.ack_upto.store(run.end(), Ordering::SeqCst);
            }
        }));
    }
    // The broker: rotations over changing member subsets, and reclaiming.
    {
        let (region, stop) = (region.clone(), stop.clone());
        let log = rotations.clone();
        let consumer_ids = consumer_ids.clone();
        threads.push(std::thread::spawn(move || {
            let r = &region.0;
            let mut rng = Rng(99);
            let mut rotations = 0u64;
            let mut next_members: Vec<Option<Vec<u32>>> = vec![None; GROUPS as usize];
            // Every offset below the result is handed out and acknowledged by its
            // owner under the rotations in `log`.
            let acknowledged = |g: u32, log: &[(u64, Vec<u32>)]| {
                let cursor = group::cursor(r.group(g).unwrap());
                let (start, members) = log.last().unwrap();
                (*start..cursor)
                    .find(|&o| {
                        let owner = members[((o - start) % members.len() as u64) as usize];
                        r.client(owner)
                            .unwrap()
                            .activity
                            .ack_upto
                            .load(Ordering::SeqCst)
                            <= o
                    })
                    .unwrap_or(cursor)
            };
            while !stop.load(Ordering::Acquire) {
                let mut upto = u64::MAX;
                for g in 0..GROUPS {
                    let entry = r.group(g).unwrap();
                    let mut log = log[g as usize].lock().unwrap();
                    if next_members[g as usize].is_none() && rng.next().is_multiple_of(8) {
                        let ids = &consumer_ids[(g * CONSUMERS_PER_GROUP) as usize..]
                            [..CONSUMERS_PER_GROUP as usize];
                        let mut chosen: Vec<u32> = ids
                            .iter()
                            .copied()
                            .filter(|_| !rng.next().is_multiple_of(3))
                            .collect();
                        if chosen.is_empty() {
                            chosen.push(ids[0]);
                        }
                        r.install_rotation(entry, &[]);
                        next_members[g as usize] = Some(chosen);
                    }
                    let done = acknowledged(g, &log);
                    if next_members[g as usize].is_some() && done == group::cursor(entry) {
                        let chosen = next_members[g as usize].take().unwrap();
                        let members: Vec<_> =
                            chosen.iter().map(|&c| r.client(c).unwrap()).collect();
                        let (start, _) = r.install_rotation(entry, &members);
                        log.push((start, chosen));
                        rotations += 1;
                    }
                    upto = upto.min(done);
                }
                r.reclaim(upto).expect("ring state stays valid");
                rng.delay();
                let total_acknowledged =
                    (0..GROUPS).all(|g| acknowledged(g, &log[g as usize].lock().unwrap()) >= total);
                if total_acknowledged {
                    break;
                }
                assert!(Instant::now() < deadline, "wedged: {rotations} rotations");
            }
            stop.store(true, Ordering::Release);
            println!("{rotations} rotations installed");
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    for (g, seen) in seen.iter().enumerate() {
        let claims = seen.lock().unwrap().clone();
        let mut offsets: Vec<u64> = claims.iter().map(|c| c.0).collect();
        offsets.sort_unstable();
        assert_eq!(
            offsets,
            (0..total).collect::<Vec<_>>(),
            "group {g}: each offset once"
        );
        // Each offset went to the member whose share it was under the rotation in force.
        let log = rotations[g].lock().unwrap();
        for &(offset, claimer) in &claims {
            let (start, members) = log
                .iter()
                .rev()
                .find(|(s, _)| *s <= offset)
                .expect("a rotation");
            let owner = members[((offset - start) % members.len() as u64) as usize];
            assert_eq!(claimer, owner, "group {g} offset {offset}");
        }
    }
}
