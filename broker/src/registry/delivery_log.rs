//! Deriving the consumption log: the lines of what each group handed out, and
//! the gating on what the log's writer has written.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use shm_layout::group;
use shm_layout::layout::redelivery;
use shm_layout::sys::wall_clock_micros;

use super::Registry;

impl Registry {
    /// Every line observed so far is written once the log's writer has written
    /// this many bytes.
    pub(super) fn log_mark(&self) -> u64 {
        self.log_taken + self.log_text.len() as u64
    }

    /// Counts the log's bytes with the writer's own count (shared with it): what
    /// waits for lines to be written waits for that count.
    pub fn count_log_written_by(&mut self, written: Arc<std::sync::atomic::AtomicU64>) {
        self.log_written = written;
    }

    /// Whether something waits for the log's lines to be written (then they are
    /// wanted now rather than at the next flush); clears the wish.
    pub fn take_log_wanted(&mut self) -> bool {
        std::mem::take(&mut self.log_wanted)
    }

    /// Bounds what groups are believed to have handed out by what the persister
    /// has written (see `observe_group`).
    pub fn bound_by_persisted(&mut self, persisted: Arc<std::sync::atomic::AtomicU64>) {
        self.persisted = persisted;
    }

    /// Logs what group `g` handed out since the last look: first deliveries (from
    /// its cursor and rotations) and redelivery claims (from the region's table),
    /// formatted straight into the pending consumption-log text.
    pub(super) fn observe_group(&mut self, g: u32) {
        let Registry {
            region,
            groups,
            clients,
            producers,
            log_text,
            log_taken,
            unknown,
            persisted,
            file_producers,
            ..
        } = self;
        let Some(entry) = region.group(g) else {
            return;
        };
        let Some(grp) = groups[g as usize].as_mut() else {
            return;
        };
        // Consumers take records at their stamps, so the cursor may pass
        // `next_offset` while a hold is in progress; beyond the stamped records, it
        // can only come from a corrupt region. So can a cursor more than a ring's
        // worth past what is persisted, or past what this group has logged (slots
        // are freed only once both are done), except for a group that resumed
        // below the ring and reads what left it from the file: it may take up to
        // the ring's tail at once. Beyond that it is followed no further, so that a
        // scribble costs a bounded number of lines, never an endless loop.
        let next = region.next_offset();
        let ring = region.geometry().slots as u64;
        let freed = region.freed_offset();
        let bound = (persisted.load(Ordering::Acquire).saturating_add(ring))
            .min(grp.logged.max(freed).saturating_add(ring));
        let cursor = match group::cursor(entry) {
            c if c <= next => c,
            c => region.stamped_end(next, c),
        }
        .min(bound);
        // Taken out while the group is looked at, and put back at the end.
        let mut lines = std::mem::take(&mut grp.delivery_lines);
        lines.set_time(wall_clock_micros());
        // A group that resumed below the ring (SPEC §10) reads records that left
        // it: the file names their producers. Only the cleaner frees slots, and
        // never one whose deliveries are not logged yet, so the others are in the
        // ring while this looks.
        let mut from_file = |o: u64| -> Arc<str> {
            file_producers
                .as_mut()
                .and_then(|f| f.producer_of(o))
                .unwrap_or_else(|| unknown.clone())
        };
        // Runs of records from one producer are the common case: one lookup a run.
        let mut last: Option<((u32, u32), &Arc<str>)> = None;
        let mut producer_of = |o: u64| -> &Arc<str> {
            let Some(key) = region.record_producer(o) else {
                return unknown;
            };
            match last {
                Some((k, name)) if k == key => name,
                _ => {
                    let name = producers.get(&key).unwrap_or(unknown);
                    last = Some((key, name));
                    name
                }
            }
        };
        while grp.logged < cursor {
            let o = grp.logged;
            region.prefetch_entry(o + 16);
            if let Some((_, consumer)) = grp.owner_of(o) {
                let attempt = if o < grp.redeliver_below { 2 } else { 1 };
                if o < freed {
                    let producer = from_file(o);
                    lines.push(log_text, o, &producer, &grp.name, consumer, attempt);
                } else {
                    lines.push(log_text, o, producer_of(o), &grp.name, consumer, attempt);
                }
                grp.delivered += 1;
            }
            grp.logged += 1;
        }
        for slot in 0..region.geometry().redeliveries_per_group {
            let Some(e) = region.redelivery_seen(g, slot) else {
                break;
            };
            let s = e.state;
            let kind = redelivery::kind(s);
            let seen = &mut grp.observed[slot as usize];
            // Only the broker's own offers are logged: what else the table holds
            // is a scribble, which the validation undoes.
            let Some(offer) = grp.offered[slot as usize] else {
                *seen = None;
                continue;
            };
            let taken = kind == redelivery::CLAIMED || kind == redelivery::ACKED;
            if !taken || redelivery::attempt(s) != offer.attempt || e.offset != offer.offset {
                *seen = None;
                continue;
            }
            let key = (redelivery::attempt(s), redelivery::claimer(s));
            if *seen == Some(key) {
                continue;
            }
            *seen = Some(key);
            let consumer = clients
                .get(key.1 as usize)
                .and_then(|c| c.as_ref())
                .map_or(&*unknown, |c| &c.id);
            let o = offer.offset;
            let attempt = redelivery::attempt_number(key.0);
            if o < freed {
                let producer = from_file(o);
                lines.push(log_text, o, &producer, &grp.name, consumer, attempt);
            } else {
                lines.push(log_text, o, producer_of(o), &grp.name, consumer, attempt);
            }
            grp.observed_log_mark[slot as usize] = *log_taken + log_text.len() as u64;
            grp.delivered += 1;
        }
        grp.delivery_lines = lines;
    }

    /// Hands over the consumption-log lines observed since the last call (whole
    /// lines), taking `into`'s allocation in exchange.
    pub fn swap_log_text(&mut self, into: &mut Vec<u8>) {
        into.clear();
        self.log_taken += self.log_text.len() as u64;
        std::mem::swap(into, &mut self.log_text);
    }
}
