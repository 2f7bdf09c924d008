//! Which partition of a topic a message goes to (SPEC §11).
//!
//! With a key: Kafka's default partitioner, `(murmur2(key) & 0x7fffffff) % partitions`,
//! with the murmur2 of Kafka's Java client (`Utils.murmur2`), so a key lands where the
//! Java client, kafka-python and librdkafka's `murmur2_random` put it, whichever way
//! it was produced. Without a key: one partition after the other.
//!
//! The producer library, the broker and its Kafka listener all place messages through
//! this crate, so the rule lives in one place.
#![forbid(unsafe_code)]

/// Kafka's murmur2 seed.
const SEED: u32 = 0x9747_b28c;
const M: u32 = 0x5bd1_e995;
const R: u32 = 24;

/// The 32-bit murmur2 hash of `data`, exactly as Kafka's Java client computes it
/// (`org.apache.kafka.common.utils.Utils.murmur2`, which returns it as a signed int).
pub fn murmur2(data: &[u8]) -> u32 {
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, byte) in rest.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of a message with `key` in a topic of `partitions` partitions
/// (at least 1): Kafka's `toPositive(murmur2(key)) % partitions`.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// Keyless messages: each goes to the partition after the previous one's.
#[derive(Debug, Clone)]
pub struct RoundRobin {
    next: u32,
}

impl RoundRobin {
    /// Starts at partition `first` (taken modulo the count at each call): producers
    /// started together spread their first messages when each starts elsewhere.
    pub fn starting_at(first: u32) -> RoundRobin {
        RoundRobin { next: first }
    }

    /// The partition of the next keyless message in a topic of `partitions`.
    pub fn next_partition(&mut self, partitions: u32) -> u32 {
        let p = self.next % partitions.max(1);
        self.next = p.wrapping_add(1);
        p
    }
}

/// Where a message goes: to `chosen` if the sender named a partition, else by its
/// key, else round-robin.
pub fn place(
    chosen: Option<u32>,
    key: Option<&[u8]>,
    partitions: u32,
    round_robin: &mut RoundRobin,
) -> u32 {
    match (chosen, key) {
        (Some(p), _) => p,
        (None, Some(key)) => partition_for_key(key, partitions),
        (None, None) => round_robin.next_partition(partitions),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Kafka's `UtilsTest.testMurmur2`: the Java client's hashes, as signed ints.
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, java) in cases {
            assert_eq!(
                murmur2(key) as i32,
                java,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
    }

    /// kafka-python's `test_murmur2_java_compatibility`: partitions out of 1000, as
    /// the Java client's default partitioner picks them (empty and binary keys too).
    #[test]
    fn partitions_match_the_java_clients_default_partitioner() {
        let cases: [(&[u8], u32); 6] = [
            (b"", 681),
            (b"a", 524),
            (b"ab", 434),
            (b"abc", 107),
            (b"123456789", 566),
            (b"\x00 ", 742),
        ];
        for (key, partition) in cases {
            assert_eq!(partition_for_key(key, 1000), partition, "{key:?}");
        }
    }

    #[test]
    fn keyless_messages_take_the_partitions_in_turn() {
        let mut rr = RoundRobin::starting_at(6);
        let taken: Vec<u32> = (0..6).map(|_| rr.next_partition(4)).collect();
        assert_eq!(taken, [2, 3, 0, 1, 2, 3]);
        assert_eq!(place(Some(3), Some(b"k"), 4, &mut rr), 3, "chosen wins");
        assert_eq!(place(None, Some(b"abc"), 1000, &mut rr), 107);
        assert_eq!(place(None, None, 4, &mut rr), 0, "the turn went on");
    }

    proptest! {
        #[test]
        fn a_key_always_lands_in_one_partition_in_range(
            key in proptest::collection::vec(any::<u8>(), 0..64),
            partitions in 1u32..5000,
        ) {
            let p = partition_for_key(&key, partitions);
            prop_assert!(p < partitions);
            prop_assert_eq!(p, partition_for_key(&key.clone(), partitions));
        }

        #[test]
        fn round_robin_spreads_evenly(start in any::<u32>(), partitions in 1u32..64) {
            let mut rr = RoundRobin::starting_at(start);
            let mut counts = vec![0u32; partitions as usize];
            for _ in 0..partitions * 10 {
                counts[rr.next_partition(partitions) as usize] += 1;
            }
            prop_assert!(counts.iter().all(|&c| c == 10));
        }
    }
}
