//! The pool's ledger and admission (issue "Several models under one memory
//! budget", items 1 and 2): what each model is charged against the budget,
//! and whether a load may start now, after evictions, later, or never.
//!
//! - A model is charged from the moment its load is admitted (its estimate:
//!   the header bytes plus the conversion peak) until its memory is freed
//!   after unload; the charge is trued up to the measured bytes at `Ready`
//!   (never above the budget: a true-up that would exceed it is refused,
//!   and the caller fails the load).
//! - A load fits when the charges plus its estimate stay within the budget.
//!   If it cannot fit even after evicting every eligible model, it is
//!   refused at once, saying how much is held by models that cannot be
//!   evicted now (pinned, or leased, or loading) — a refusal that names what
//!   blocks it. If evicting the leased models too would make it fit, it
//!   waits instead (leases end); if only pinned models stand in the way, it
//!   is refused.
//!
//! Pure: the pool holds a `Ledger` under its lock and acts on the
//! [`Admission`]s it returns.

use std::collections::BTreeMap;

use super::evict::{plan, Candidate};

/// What a model holds against the budget, and why it cannot be evicted
/// right now, if it cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// Ready, no lease, not pinned: may be evicted.
    Evictable,
    /// Ready with leases held, or loading, or unloading with leases held:
    /// may become evictable (or free) later.
    Busy,
    /// Unloading with no lease left: its memory is on its way back (an
    /// eviction already made for a load), so no other model is evicted
    /// for it meanwhile.
    Freeing,
    /// Pinned: never evicted.
    Pinned,
}

/// One model's entry in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Charge {
    pub(crate) bytes: u64,
    pub(crate) hold: Hold,
    pub(crate) last_used: u64,
    pub(crate) expired: bool,
}

/// The answer to "may this load start?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission<Id> {
    /// It fits now: it has been charged.
    Fits,
    /// It fits once these models are unloaded (in this order); nothing has
    /// been charged yet: charge after the evictions free their memory.
    Evict(Vec<Id>),
    /// It fits only once leases are released or loads end: wait, bounded.
    Wait,
    /// The model is already charged (loading or resident): never admitted
    /// twice; join its load or lease it.
    Already,
    /// It can never fit while the pinned models stay: refuse at once.
    Refuse {
        needed: u64,
        available: u64,
        pinned: u64,
    },
}

/// Why a true-up was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TrueUp {
    /// The measured bytes exceed what the budget leaves the model.
    OverBudget { available: u64 },
    /// The model was never admitted.
    NotAdmitted,
}

/// Charges against one device's budget.
#[derive(Debug, Clone)]
pub(crate) struct Ledger<Id> {
    budget: u64,
    charges: BTreeMap<Id, Charge>,
}

impl<Id: Ord + Clone> Ledger<Id> {
    pub(crate) fn new(budget: u64) -> Self {
        Ledger {
            budget,
            charges: BTreeMap::new(),
        }
    }

    /// Bytes charged in all.
    pub(crate) fn charged(&self) -> u64 {
        self.charges
            .values()
            .fold(0u64, |sum, c| sum.saturating_add(c.bytes))
    }

    /// The models charged, in order (a copy, for callers that change the
    /// ledger as they go).
    pub(crate) fn keys(&self) -> Vec<Id> {
        self.charges.keys().cloned().collect()
    }

    /// The charges, in order, without copying.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Id, &Charge)> {
        self.charges.iter()
    }

    pub(crate) fn budget(&self) -> u64 {
        self.budget
    }

    pub(crate) fn get(&self, id: &Id) -> Option<&Charge> {
        self.charges.get(id)
    }

    /// Whether memory already on its way back (models unloading with no
    /// lease left) is enough for a load of `id` needing `needed` bytes: its
    /// wait then ends by itself, without anyone releasing anything.
    pub(crate) fn freeing_covers(&self, id: &Id, needed: u64) -> bool {
        let free = self.budget.saturating_sub(self.charged());
        let freeing = self
            .charges
            .iter()
            .filter(|(other, c)| *other != id && c.hold == Hold::Freeing)
            .fold(0u64, |sum, (_, c)| sum.saturating_add(c.bytes));
        needed > free && needed <= free.saturating_add(freeing)
    }

    /// May a load of `id` needing `needed` bytes start? Charges it when it
    /// fits now. A model already charged is not admitted twice.
    pub(crate) fn admit(&mut self, id: &Id, needed: u64, last_used: u64) -> Admission<Id> {
        let charged = self.charged();
        let free = self.budget.saturating_sub(charged);
        let held_by = |hold: Hold| {
            self.charges
                .iter()
                .filter(|(other, c)| *other != id && c.hold == hold)
                .fold(0u64, |sum, (_, c)| sum.saturating_add(c.bytes))
        };
        let pinned = held_by(Hold::Pinned);
        if self.charges.contains_key(id) {
            return Admission::Already;
        }
        if needed <= free {
            self.charges.insert(
                id.clone(),
                Charge {
                    bytes: needed,
                    hold: Hold::Busy,
                    last_used,
                    expired: false,
                },
            );
            return Admission::Fits;
        }
        // Memory already on its way back is not evicted for twice: wait
        // for it, and evict only for what it will not cover.
        let freeing = held_by(Hold::Freeing);
        if self.freeing_covers(id, needed) {
            return Admission::Wait;
        }
        let shortfall = needed - free - freeing;
        let candidates: Vec<Candidate<Id>> = self
            .charges
            .iter()
            .map(|(other, c)| Candidate {
                id: other.clone(),
                bytes: c.bytes,
                last_used: c.last_used,
                eligible: c.hold == Hold::Evictable,
                expired: c.expired,
            })
            .collect();
        if let Some(evict) = plan(&candidates, shortfall) {
            return Admission::Evict(evict);
        }
        // Not even with every evictable model gone. Leases end and loads
        // finish; pins do not.
        if self.budget.saturating_sub(pinned) >= needed {
            Admission::Wait
        } else {
            Admission::Refuse {
                needed,
                available: self.budget.saturating_sub(pinned),
                pinned,
            }
        }
    }

    /// The load ended Ready having measured `bytes`: true the charge up (or
    /// down). Refused when that would exceed the budget (the charge is left
    /// as it was; the caller fails the load and releases it), or when `id`
    /// was never admitted.
    pub(crate) fn true_up(&mut self, id: &Id, bytes: u64) -> Result<(), TrueUp> {
        let others = self
            .charges
            .iter()
            .filter(|(other, _)| *other != id)
            .fold(0u64, |sum, (_, c)| sum.saturating_add(c.bytes));
        let available = self.budget.saturating_sub(others);
        match self.charges.get_mut(id) {
            Some(charge) if bytes <= available => {
                charge.bytes = bytes;
                Ok(())
            }
            Some(_) => Err(TrueUp::OverBudget { available }),
            None => Err(TrueUp::NotAdmitted),
        }
    }

    /// Whether `id` may be evicted, and its recency.
    pub(crate) fn set_hold(&mut self, id: &Id, hold: Hold, last_used: u64, expired: bool) {
        if let Some(charge) = self.charges.get_mut(id) {
            charge.hold = hold;
            charge.last_used = last_used;
            charge.expired = expired;
        }
    }

    /// `id`'s memory is freed (after its unload, or a failed or cancelled
    /// load): stop charging it.
    pub(crate) fn release(&mut self, id: &Id) -> u64 {
        self.charges.remove(id).map_or(0, |c| c.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn admission_in_each_case() {
        let mut l = Ledger::new(100);
        assert_eq!(l.admit(&"a", 60, 0), Admission::Fits);
        assert_eq!(l.admit(&"a", 60, 0), Admission::Already, "never twice");
        // b does not fit while a loads or is leased: wait.
        assert_eq!(l.admit(&"b", 60, 1), Admission::Wait);
        // a Ready and unleased: evict it.
        l.set_hold(&"a", Hold::Evictable, 0, false);
        assert_eq!(l.admit(&"b", 60, 1), Admission::Evict(vec!["a"]));
        // a already on its way out: wait for it, evict nothing more.
        l.set_hold(&"a", Hold::Freeing, 0, false);
        assert_eq!(l.admit(&"b", 60, 1), Admission::Wait);
        // a pinned: b can never fit.
        l.set_hold(&"a", Hold::Pinned, 0, false);
        assert_eq!(
            l.admit(&"b", 60, 1),
            Admission::Refuse {
                needed: 60,
                available: 40,
                pinned: 60
            }
        );
        // Larger than the whole budget: refused even with nothing pinned.
        l.release(&"a");
        assert_eq!(
            l.admit(&"c", 101, 2),
            Admission::Refuse {
                needed: 101,
                available: 100,
                pinned: 0
            }
        );
        // True-up within the budget, refused beyond it.
        assert_eq!(l.admit(&"b", 60, 1), Admission::Fits);
        assert_eq!(l.true_up(&"b", 70), Ok(()));
        assert_eq!(l.charged(), 70);
        assert_eq!(l.admit(&"d", 30, 3), Admission::Fits);
        assert_eq!(
            l.true_up(&"d", 31),
            Err(TrueUp::OverBudget { available: 30 })
        );
        assert_eq!(l.true_up(&"x", 1), Err(TrueUp::NotAdmitted));
        assert_eq!(l.charged(), 100);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Admit(u8, u64),
        TrueUp(u8, u64),
        Hold(u8, u8, bool),
        Release(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..6, 1u64..80).prop_map(|(i, b)| Op::Admit(i, b)),
            (0u8..6, 1u64..80).prop_map(|(i, b)| Op::TrueUp(i, b)),
            (0u8..6, 0u8..4, any::<bool>()).prop_map(|(i, h, e)| Op::Hold(i, h, e)),
            (0u8..6).prop_map(Op::Release),
        ]
    }

    proptest! {
        /// Whatever happens, the charges never exceed the budget; an
        /// eviction plan only names evictable models and, once they are
        /// released, the load fits; a refusal means it could not fit even
        /// with every model that is not pinned gone.
        #[test]
        fn charges_never_exceed_the_budget(ops in prop::collection::vec(op(), 1..60)) {
            let mut l: Ledger<u8> = Ledger::new(100);
            for (t, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Admit(id, bytes) => match l.admit(&id, bytes, t as u64) {
                        Admission::Fits => prop_assert!(l.get(&id).is_some()),
                        Admission::Evict(ids) => {
                            prop_assert!(!ids.is_empty());
                            for e in &ids {
                                prop_assert_eq!(l.get(e).map(|c| c.hold), Some(Hold::Evictable));
                            }
                            // Once they and the memory already freeing
                            // are back, it fits.
                            let mut after = l.clone();
                            for e in &ids {
                                after.release(e);
                            }
                            for k in l.keys() {
                                if l.get(&k).map(|c| c.hold) == Some(Hold::Freeing) {
                                    after.release(&k);
                                }
                            }
                            prop_assert_eq!(after.admit(&id, bytes, t as u64), Admission::Fits);
                        }
                        Admission::Wait => prop_assert!(l.get(&id).is_none()),
                        Admission::Already => prop_assert!(l.get(&id).is_some()),
                        Admission::Refuse { needed, available, pinned } => {
                            prop_assert_eq!(needed, bytes);
                            prop_assert!(needed > available);
                            prop_assert_eq!(available, l.budget() - pinned);
                        }
                    },
                    Op::TrueUp(id, bytes) => {
                        let _ = l.true_up(&id, bytes);
                    }
                    Op::Hold(id, hold, expired) => {
                        let hold = [Hold::Evictable, Hold::Busy, Hold::Pinned, Hold::Freeing][hold as usize];
                        l.set_hold(&id, hold, t as u64, expired);
                    }
                    Op::Release(id) => {
                        l.release(&id);
                    }
                }
                prop_assert!(l.charged() <= l.budget(), "charged {} > budget", l.charged());
            }
        }
    }
}
