//! Deriving the consumption log: the lines of what each group handed out, and
//! the gating on what the log's writer has written.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use shm_layout::group;
use shm_layout::layout::redelivery;
use shm_layout::sys::wall_clock_micros;

use super::Registry;
use crate::file_producers::FileProducers;

impl Registry {
    /// Every line observed so far is written once the log's writer has written
    /// this many bytes.
    pub(super) fn log_mark(&self) -> u64 {
        self.log_taken + self.log_text.len() as u64
    }

    /// Every line observed so far is written once the log's writer has written
    /// this many bytes.
    pub fn log_end(&self) -> u64 {
        self.log_mark()
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

    /// Logs what group `g` handed out since the last look, in every ring it reads.
    pub(super) fn observe_group(&mut self, g: u32) {
        for r in 0..self.ring_count(g) {
            self.observe_ring(g, r);
        }
    }

    /// Logs what group `g` handed out in its `r`-th ring since the last look:
    /// first deliveries (from its cursor and rotations) and redelivery claims
    /// (from the ring's table), formatted straight into the pending
    /// consumption-log text.
    pub(super) fn observe_ring(&mut self, g: u32, r: usize) {
        let persisted = self.persisted_of(g, r);
        let Registry {
            groups,
            clients,
            producers,
            log_text,
            log_taken,
            unknown,
            file_producers,
            partition_producers,
            ..
        } = self;
        let Some(grp) = groups.get_mut(g as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(gr) = grp.rings.get_mut(r) else {
            return;
        };
        let region = gr.region.clone();
        let Some(entry) = region.group(g) else {
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
        let bound = (persisted.saturating_add(ring)).min(gr.logged.max(freed).saturating_add(ring));
        let cursor = match group::cursor(entry) {
            c if c <= next => c,
            c => region.stamped_end(next, c),
        }
        .min(bound);
        // Taken out while the group is looked at, and put back at the end.
        let mut lines = std::mem::take(&mut gr.delivery_lines);
        lines.set_time(wall_clock_micros());
        // A group that resumed below the ring (SPEC §10) reads records that left
        // it: the file names their producers. Only the cleaner frees slots, and
        // never one whose deliveries are not logged yet, so the others are in the
        // ring while this looks.
        let names_in_file = match &gr.partition_ring {
            None => file_producers.as_mut(),
            // It opens the file only when asked for a name.
            Some(ring) => Some(partition_producers.entry(gr.file_key).or_insert_with(|| {
                let data_dir = super::readers::data_dir_of(file_producers);
                FileProducers::of(data_dir, ring.partition.clone(), None)
            })),
        };
        let unknown: &Arc<str> = unknown;
        let mut names_in_file = names_in_file;
        let mut from_file = |o: u64| -> Arc<str> {
            names_in_file
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
        while gr.logged < cursor {
            let o = gr.logged;
            region.prefetch_entry(o + 16);
            if let Some((_, consumer)) = gr.owner_of(o) {
                let attempt = if o < gr.redeliver_below { 2 } else { 1 };
                if o < freed {
                    let producer = from_file(o);
                    lines.push(log_text, o, &producer, &grp.name, consumer, attempt);
                } else {
                    lines.push(log_text, o, producer_of(o), &grp.name, consumer, attempt);
                }
                gr.delivered += 1;
            }
            gr.logged += 1;
        }
        for slot in 0..region.geometry().redeliveries_per_group {
            let Some(e) = region.redelivery_seen(g, slot) else {
                break;
            };
            let s = e.state;
            let kind = redelivery::kind(s);
            let seen = &mut gr.observed[slot as usize];
            // Only the broker's own offers are logged: what else the table holds
            // is a scribble, which the validation undoes.
            let Some(offer) = gr.offered[slot as usize] else {
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
                .map_or(unknown, |c| &c.id);
            let o = offer.offset;
            let attempt = redelivery::attempt_number(key.0);
            if o < freed {
                let producer = from_file(o);
                lines.push(log_text, o, &producer, &grp.name, consumer, attempt);
            } else {
                lines.push(log_text, o, producer_of(o), &grp.name, consumer, attempt);
            }
            gr.observed_log_mark[slot as usize] = *log_taken + log_text.len() as u64;
            gr.delivered += 1;
        }
        gr.delivery_lines = lines;
    }

    /// Every offset below this is persisted in group `g`'s `r`-th ring.
    fn persisted_of(&self, g: u32, r: usize) -> u64 {
        match self.group_ring(g, r) {
            Some(gr) if gr.ring != 0 => self
                .topics
                .as_ref()
                .and_then(|t| t.ring(gr.ring))
                .map_or(0, |ring| ring.persisted.load(Ordering::Acquire)),
            _ => self.persisted.load(Ordering::Acquire),
        }
    }

    /// Hands over the consumption-log lines observed since the last call (whole
    /// lines), taking `into`'s allocation in exchange.
    pub fn swap_log_text(&mut self, into: &mut Vec<u8>) {
        into.clear();
        self.log_taken += self.log_text.len() as u64;
        std::mem::swap(into, &mut self.log_text);
    }
}
