//! The host tier's ledger (issue "The pool as an image-generation app's
//! model cache", item 2): what the models parked in host memory hold
//! against the host budget, and what becomes of a model evicted from the
//! device: parked, when the tier can hold it (dropping the least recently
//! used parked models that are not being copied), or freed.
//!
//! Pure, like the device's [`Ledger`](super::ledger::Ledger): the pool holds
//! a `HostTier` beside it under its lock and acts on the [`Fate`]s it
//! returns. The two together are property-tested below against a reference
//! model of the models' places.

use std::collections::BTreeMap;

/// One parked model's charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) bytes: u64,
    pub(crate) last_used: u64,
    /// Being copied in (parked): never dropped meanwhile.
    pub(crate) copying: bool,
    /// Loads reading it back (resumes, a stopped one and its successor
    /// may overlap): never dropped while any runs.
    pub(crate) readers: u32,
}

impl Slot {
    /// Never dropped for room now.
    pub(crate) fn busy(&self) -> bool {
        self.copying || self.readers > 0
    }
}

/// What becomes of a model leaving the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fate<Id> {
    /// Parked: charged against the host budget (busy while it is copied)
    /// once these parked models are dropped (they were, from the ledger:
    /// the caller frees their copies).
    Park { dropped: Vec<Id> },
    /// Freed: the tier cannot hold it (or there is no tier).
    Free,
}

/// Charges against the host budget.
#[derive(Debug, Clone)]
pub(crate) struct HostTier<Id> {
    budget: u64,
    parked: BTreeMap<Id, Slot>,
}

impl<Id: Ord + Clone> HostTier<Id> {
    pub(crate) fn new(budget: u64) -> Self {
        HostTier {
            budget,
            parked: BTreeMap::new(),
        }
    }

    pub(crate) fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes charged in all.
    pub(crate) fn charged(&self) -> u64 {
        self.parked
            .values()
            .fold(0u64, |sum, s| sum.saturating_add(s.bytes))
    }

    pub(crate) fn get(&self, id: &Id) -> Option<&Slot> {
        self.parked.get(id)
    }

    /// `id`, of `bytes`, last used at `last_used`, leaves the device: park
    /// it when the tier can hold it, dropping the least recently used parked
    /// models that are not busy to make room (none if it cannot fit even
    /// with all of them gone); charged and busy at once. `id` has no copy
    /// here (a model on the device has none: its install dropped it).
    pub(crate) fn place(&mut self, id: &Id, bytes: u64, last_used: u64) -> Fate<Id> {
        if self.parked.contains_key(id) {
            return Fate::Free;
        }
        let mut dropped = Vec::new();
        let busy: u64 = self
            .parked
            .values()
            .filter(|s| s.busy())
            .fold(0u64, |sum, s| sum.saturating_add(s.bytes));
        if self.budget == 0 || bytes > self.budget.saturating_sub(busy) {
            return Fate::Free;
        }
        let mut idle: Vec<(u64, Id, u64)> = self
            .parked
            .iter()
            .filter(|(_, s)| !s.busy())
            .map(|(k, s)| (s.last_used, k.clone(), s.bytes))
            .collect();
        idle.sort();
        let mut free = self.budget.saturating_sub(self.charged());
        let mut idle = idle.into_iter();
        while free < bytes {
            // Enough idle bytes exist (checked above): never runs out.
            let Some((_, victim, victim_bytes)) = idle.next() else {
                return Fate::Free;
            };
            self.parked.remove(&victim);
            free = free.saturating_add(victim_bytes);
            dropped.push(victim);
        }
        self.parked.insert(
            id.clone(),
            Slot {
                bytes,
                last_used,
                copying: true,
                readers: 0,
            },
        );
        Fate::Park { dropped }
    }

    /// `id`'s copy is made and holds `bytes`: charge those (it is no longer
    /// busy). Refused (and `id` released) when they do not fit: the caller
    /// drops the copy.
    pub(crate) fn parked(&mut self, id: &Id, bytes: u64) -> bool {
        let others = self
            .parked
            .iter()
            .filter(|(k, _)| *k != id)
            .fold(0u64, |sum, (_, s)| sum.saturating_add(s.bytes));
        match self.parked.get_mut(id) {
            Some(slot) if others.saturating_add(bytes) <= self.budget => {
                slot.bytes = bytes;
                slot.copying = false;
                true
            }
            _ => {
                self.parked.remove(id);
                false
            }
        }
    }

    /// `id`'s copy was last used at `last_used` (its model just left the
    /// device).
    pub(crate) fn touch(&mut self, id: &Id, last_used: u64) {
        if let Some(slot) = self.parked.get_mut(id) {
            slot.last_used = last_used;
        }
    }

    /// A load starts reading `id`'s copy back to the device.
    pub(crate) fn begin_read(&mut self, id: &Id) {
        if let Some(slot) = self.parked.get_mut(id) {
            slot.readers += 1;
        }
    }

    /// A load that read `id`'s copy ended (however).
    pub(crate) fn end_read(&mut self, id: &Id) {
        if let Some(slot) = self.parked.get_mut(id) {
            slot.readers = slot.readers.saturating_sub(1);
        }
    }

    /// `id`'s copy is freed: stop charging it.
    pub(crate) fn release(&mut self, id: &Id) -> u64 {
        self.parked.remove(id).map_or(0, |s| s.bytes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::pool::ledger::{Admission, Hold, Ledger};
    use proptest::prelude::*;

    #[test]
    fn parks_what_fits_dropping_the_least_recently_used() {
        let mut t = HostTier::new(100);
        assert_eq!(t.place(&"a", 40, 1), Fate::Park { dropped: vec![] });
        assert!(t.parked(&"a", 40));
        assert_eq!(t.place(&"b", 40, 2), Fate::Park { dropped: vec![] });
        assert!(t.parked(&"b", 40));
        // c needs 50: a (older) goes, b stays.
        assert_eq!(t.place(&"c", 50, 3), Fate::Park { dropped: vec!["a"] });
        assert_eq!(t.charged(), 90);
        // c is still being copied: it is never dropped, so d cannot fit.
        assert_eq!(t.place(&"d", 60, 4), Fate::Free);
        assert!(t.get(&"b").is_some(), "a refused park drops nothing");
        assert!(t.parked(&"c", 50));
        assert_eq!(
            t.place(&"d", 60, 4),
            Fate::Park {
                dropped: vec!["b", "c"]
            }
        );
        // Larger than the tier: freed.
        assert_eq!(t.place(&"e", 101, 5), Fate::Free);
        // A copy larger than its estimate that no longer fits is refused.
        assert_eq!(t.place(&"f", 30, 6), Fate::Park { dropped: vec![] });
        assert!(!t.parked(&"f", 41));
        assert!(t.get(&"f").is_none());
        assert_eq!(t.release(&"d"), 60);
        assert_eq!(t.charged(), 0);
    }

    #[test]
    fn a_copy_being_read_is_never_dropped() {
        let mut t = HostTier::new(50);
        assert_eq!(t.place(&"a", 40, 1), Fate::Park { dropped: vec![] });
        assert!(t.parked(&"a", 40));
        // A resume stopped and another started: two readers.
        t.begin_read(&"a");
        t.begin_read(&"a");
        t.end_read(&"a");
        assert_eq!(t.place(&"b", 40, 2), Fate::Free, "one reader left");
        t.end_read(&"a");
        assert_eq!(t.place(&"b", 40, 2), Fate::Park { dropped: vec!["a"] });
        // Reading a copy that is gone changes nothing.
        t.begin_read(&"a");
        t.end_read(&"zz");
        assert_eq!(t.charged(), 40);
    }

    #[test]
    fn no_tier_frees() {
        let mut t: HostTier<&str> = HostTier::new(0);
        assert_eq!(t.place(&"a", 1, 0), Fate::Free);
    }

    /// Where the reference model says a model is. A model loaded back
    /// from its copy keeps it (`copy`) while the tier has room.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Place {
        Off,
        Device { leases: u32, copy: bool },
        Parked,
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Acquire model i (of the given size when it must be loaded).
        Acquire(u8, u64),
        Release(u8),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..6, 1u64..70).prop_map(|(i, b)| Op::Acquire(i, b)),
            3 => (0u8..6).prop_map(Op::Release),
            1 => (0u8..6).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// The pool's two ledgers driven as the pool drives them, against
        /// a reference model of where each model is: never over either
        /// budget; only unleased device models are evicted; a parked model
        /// is never leased nor charged on the device; a copy the tier
        /// drops was a parked model's or a kept copy of a device model's;
        /// everything removed, both charges are back to 0.
        #[test]
        fn two_budgets_against_a_reference(
            host_budget in 0u64..150,
            ops in prop::collection::vec(op(), 1..80),
        ) {
            let mut device: Ledger<u8> = Ledger::new(100);
            let mut host: HostTier<u8> = HostTier::new(host_budget);
            let mut places = [Place::Off; 6];
            let mut sizes = [0u64; 6];
            for (t, op) in ops.into_iter().enumerate() {
                let tick = t as u64;
                match op {
                    Op::Acquire(i, bytes) => {
                        let slot = i as usize;
                        if let Place::Device { leases, .. } = &mut places[slot] {
                            *leases += 1;
                            device.set_hold(&i, Hold::Busy, tick, false);
                            continue;
                        }
                        // A parked model comes back at its parked size.
                        let needed = if places[slot] == Place::Parked { sizes[slot] } else { bytes };
                        let mut admission = device.admit(&i, needed, tick);
                        if let Admission::Evict(victims) = &admission {
                            for v in victims.clone() {
                                let vs = v as usize;
                                let Place::Device { leases: 0, copy } = places[vs] else {
                                    return Err(TestCaseError::fail(format!("evicted {:?}", places[vs])));
                                };
                                let charged = device.release(&v);
                                if copy {
                                    // Its kept copy: parked at once.
                                    host.touch(&v, tick);
                                    places[vs] = Place::Parked;
                                    continue;
                                }
                                match host.place(&v, charged, tick) {
                                    Fate::Park { dropped } => {
                                        for d in dropped {
                                            let ds = d as usize;
                                            places[ds] = match places[ds] {
                                                Place::Parked => Place::Off,
                                                Place::Device { leases, copy: true } => {
                                                    Place::Device { leases, copy: false }
                                                }
                                                other => {
                                                    return Err(TestCaseError::fail(format!(
                                                        "dropped the copy of {other:?}"
                                                    )))
                                                }
                                            };
                                        }
                                        // The copy completes at its size.
                                        prop_assert!(host.parked(&v, charged));
                                        places[vs] = Place::Parked;
                                        sizes[vs] = charged;
                                    }
                                    Fate::Free => places[vs] = Place::Off,
                                }
                            }
                            admission = device.admit(&i, needed, tick);
                            prop_assert_eq!(&admission, &Admission::Fits);
                        }
                        if admission == Admission::Fits {
                            // Loaded back from its copy, which it keeps.
                            let copy = places[slot] == Place::Parked;
                            places[slot] = Place::Device { leases: 1, copy };
                            sizes[slot] = needed;
                        }
                    }
                    Op::Release(i) => {
                        if let Place::Device { leases, .. } = &mut places[i as usize] {
                            if *leases > 0 {
                                *leases -= 1;
                                if *leases == 0 {
                                    device.set_hold(&i, Hold::Evictable, tick, false);
                                }
                            }
                        }
                    }
                    Op::Remove(i) => {
                        device.release(&i);
                        host.release(&i);
                        places[i as usize] = Place::Off;
                    }
                }
                prop_assert!(device.charged() <= device.budget());
                prop_assert!(host.charged() <= host.budget());
                for (i, place) in places.iter().enumerate() {
                    let id = i as u8;
                    match place {
                        Place::Parked => {
                            prop_assert!(host.get(&id).is_some());
                            prop_assert!(device.get(&id).is_none(), "parked and on the device");
                        }
                        Place::Device { copy, .. } => {
                            prop_assert!(device.get(&id).is_some());
                            prop_assert_eq!(host.get(&id).is_some(), *copy);
                        }
                        Place::Off => {
                            prop_assert!(device.get(&id).is_none() && host.get(&id).is_none());
                        }
                    }
                }
            }
            for i in 0u8..6 {
                device.release(&i);
                host.release(&i);
            }
            prop_assert_eq!(device.charged(), 0);
            prop_assert_eq!(host.charged(), 0);
        }
    }
}
