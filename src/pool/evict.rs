//! The eviction planner of the pool: which resident models to unload so that
//! a load of `shortfall` more bytes fits the budget. A pure function over a
//! snapshot of the candidates, so that it can be tested against its
//! specification on its own (`tests` below, with proptest).
//!
//! The specification (issue "Several models under one memory budget", item
//! 3), made precise:
//!
//! - **Eligible**: only models that are `Ready`, hold no lease and are not
//!   pinned are ever chosen.
//! - **All or nothing**: if the eligible models together hold less than the
//!   shortfall, nothing is chosen (`None`): evicting part of what is needed
//!   would unload models for a load that still cannot start.
//! - **Expired first**: models whose keep-alive has expired (they are due to
//!   unload anyway) are taken first, least recently used first, until the
//!   shortfall is covered; if they cover it, no other model is chosen, and
//!   of the expired ones only as many as needed (none that could be left
//!   out with the rest still covering).
//! - **Then one model if one suffices**: of the rest, the least recently
//!   used model that alone covers what is still missing.
//! - **Else least recently used first** until covered, then any member
//!   that turns out unnecessary is dropped (most recently used first), so
//!   no non-expired member can be left out with the rest still covering.
//! - **Deterministic**: ties in recency are broken by id; the input's
//!   order does not matter; the plan lists models in eviction order.

use std::cmp::Ordering;

/// A resident model, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate<Id> {
    pub(crate) id: Id,
    /// Bytes its unload gives back (its measured bytes once `Ready`).
    pub(crate) bytes: u64,
    /// When it was last acquired or released: smaller is older. Any
    /// monotonic clock (an `Instant`, a counter).
    pub(crate) last_used: u64,
    /// `Ready`, no lease held, not pinned.
    pub(crate) eligible: bool,
    /// Its keep-alive has run out.
    pub(crate) expired: bool,
}

/// The models to evict, in order, so that at least `shortfall` bytes come
/// back; `None` if the eligible models cannot cover it (see the module
/// docs). An empty plan when there is no shortfall.
pub(crate) fn plan<Id: Ord + Clone>(
    candidates: &[Candidate<Id>],
    shortfall: u64,
) -> Option<Vec<Id>> {
    if shortfall == 0 {
        return Some(Vec::new());
    }
    let lru = |a: &&Candidate<Id>, b: &&Candidate<Id>| -> Ordering {
        a.last_used.cmp(&b.last_used).then_with(|| a.id.cmp(&b.id))
    };
    let mut expired: Vec<&Candidate<Id>> = candidates
        .iter()
        .filter(|c| c.eligible && c.expired)
        .collect();
    let mut fresh: Vec<&Candidate<Id>> = candidates
        .iter()
        .filter(|c| c.eligible && !c.expired)
        .collect();
    expired.sort_by(lru);
    fresh.sort_by(lru);
    let total = expired
        .iter()
        .chain(&fresh)
        .fold(0u64, |sum, c| sum.saturating_add(c.bytes));
    if total < shortfall {
        return None;
    }

    // Expired first, least recently used first, until covered.
    let mut chosen: Vec<&Candidate<Id>> = Vec::new();
    let mut covered = 0u64;
    for &c in &expired {
        if covered >= shortfall {
            break;
        }
        chosen.push(c);
        covered = covered.saturating_add(c.bytes);
    }
    if covered >= shortfall {
        prune(&mut chosen, shortfall);
        return Some(chosen.into_iter().map(|c| c.id.clone()).collect());
    }

    // Then the least recently used single model that covers the rest.
    let missing = shortfall - covered;
    if let Some(&one) = fresh.iter().find(|c| c.bytes >= missing) {
        chosen.push(one);
        return Some(chosen.into_iter().map(|c| c.id.clone()).collect());
    }

    // Else least recently used first until covered, then drop what is not
    // needed.
    let first_fresh = chosen.len();
    for &c in &fresh {
        if covered >= shortfall {
            break;
        }
        chosen.push(c);
        covered = covered.saturating_add(c.bytes);
    }
    let mut rest = chosen.split_off(first_fresh);
    prune(&mut rest, missing);
    chosen.extend(rest);
    Some(chosen.into_iter().map(|c| c.id.clone()).collect())
}

/// Drop members of `chosen` (most recently used first) while the rest still
/// covers `needed`.
fn prune<Id>(chosen: &mut Vec<&Candidate<Id>>, needed: u64) {
    let mut total = chosen.iter().fold(0u64, |s, c| s.saturating_add(c.bytes));
    let mut i = chosen.len();
    while i > 0 {
        i -= 1;
        let bytes = chosen.get(i).map_or(0, |c| c.bytes);
        if total.saturating_sub(bytes) >= needed {
            total -= bytes;
            chosen.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(id: u32, bytes: u64, last_used: u64) -> Candidate<u32> {
        Candidate {
            id,
            bytes,
            last_used,
            eligible: true,
            expired: false,
        }
    }

    #[test]
    fn the_examples_of_the_specification() {
        // Nothing missing: nothing to do.
        assert_eq!(plan(&[c(1, 10, 0)], 0), Some(vec![]));
        // Not enough even with everything: nothing.
        assert_eq!(plan(&[c(1, 10, 0), c(2, 10, 1)], 21), None);
        // One model suffices: the least recently used of those that do.
        let cs = [c(1, 2, 0), c(2, 8, 1), c(3, 9, 2)];
        assert_eq!(plan(&cs, 5), Some(vec![2]));
        // None suffices alone: least recently used first, then pruned.
        let cs = [c(1, 1, 0), c(2, 5, 1), c(3, 3, 2)];
        assert_eq!(plan(&cs, 6), Some(vec![1, 2]));
        let cs = [c(1, 4, 0), c(2, 1, 1), c(3, 4, 2)];
        assert_eq!(plan(&cs, 8), Some(vec![1, 3]));
        // Expired ones first, even if younger.
        let mut e = c(3, 5, 9);
        e.expired = true;
        assert_eq!(plan(&[c(1, 5, 0), e.clone()], 5), Some(vec![3]));
        // Expired ones, then one more.
        assert_eq!(plan(&[c(1, 5, 0), c(2, 9, 1), e], 8), Some(vec![3, 1]));
        // A leased or pinned model is never chosen.
        let mut held = c(1, 100, 0);
        held.eligible = false;
        assert_eq!(plan(&[held.clone(), c(2, 5, 1)], 5), Some(vec![2]));
        assert_eq!(plan(&[held, c(2, 5, 1)], 6), None);
        // Ties in recency: by id.
        assert_eq!(plan(&[c(2, 5, 0), c(1, 5, 0)], 5), Some(vec![1]));
    }

    fn candidates() -> impl Strategy<Value = Vec<Candidate<u32>>> {
        prop::collection::vec(
            (1u64..64, 0u64..8, any::<bool>(), prop::bool::weighted(0.2)),
            0..10,
        )
        .prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (bytes, last_used, eligible, expired))| Candidate {
                    id: i as u32,
                    bytes,
                    last_used,
                    eligible,
                    expired,
                })
                .collect()
        })
    }

    fn sum(cs: &[Candidate<u32>], ids: &[u32]) -> u64 {
        ids.iter()
            .map(|id| cs.iter().find(|c| c.id == *id).map_or(0, |c| c.bytes))
            .sum()
    }

    proptest! {
        #[test]
        fn plans_keep_the_specification(cs in candidates(), shortfall in 0u64..200, seed in any::<u64>()) {
            let result = plan(&cs, shortfall);
            let eligible: u64 = cs.iter().filter(|c| c.eligible).map(|c| c.bytes).sum();
            // All or nothing.
            prop_assert_eq!(result.is_none(), eligible < shortfall);
            let Some(ids) = result else { return Ok(()) };
            let chosen: Vec<&Candidate<u32>> =
                ids.iter().map(|id| cs.iter().find(|c| c.id == *id).unwrap()).collect();
            // Only eligible models, each once; and they cover the shortfall.
            prop_assert!(chosen.iter().all(|c| c.eligible));
            let mut unique = ids.clone();
            unique.sort_unstable();
            unique.dedup();
            prop_assert_eq!(unique.len(), ids.len());
            prop_assert!(sum(&cs, &ids) >= shortfall);
            // Expired first: a fresh model is chosen only if every expired
            // eligible model is, and the expired ones come first.
            let expired_all: Vec<u32> =
                cs.iter().filter(|c| c.eligible && c.expired).map(|c| c.id).collect();
            if chosen.iter().any(|c| !c.expired) {
                prop_assert!(expired_all.iter().all(|id| ids.contains(id)));
            }
            let first_fresh = chosen.iter().position(|c| !c.expired).unwrap_or(chosen.len());
            prop_assert!(chosen[first_fresh..].iter().all(|c| !c.expired));
            // Minimal: no fresh member can be left out (and, when only
            // expired ones are chosen, no expired one either).
            let only_expired = first_fresh == chosen.len();
            for (i, c) in chosen.iter().enumerate() {
                if !c.expired || only_expired {
                    let mut without = ids.clone();
                    without.remove(i);
                    prop_assert!(sum(&cs, &without) < shortfall, "{:?} could stay", c.id);
                }
            }
            // One model if one suffices: the least recently used of the
            // fresh ones that alone cover what the expired ones leave.
            let missing = shortfall.saturating_sub(sum(&cs, &expired_all));
            let mut covering: Vec<&Candidate<u32>> = cs
                .iter()
                .filter(|c| c.eligible && !c.expired && c.bytes >= missing)
                .collect();
            covering.sort_by_key(|c| (c.last_used, c.id));
            if first_fresh < chosen.len() {
                if let Some(one) = covering.first() {
                    prop_assert_eq!(&ids[first_fresh..], &[one.id][..]);
                }
            }
            // Deterministic: the input's order does not matter.
            let mut shuffled = cs.clone();
            let n = shuffled.len();
            if n > 1 {
                let mut s = seed;
                for i in (1..n).rev() {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    shuffled.swap(i, (s >> 33) as usize % (i + 1));
                }
            }
            prop_assert_eq!(plan(&shuffled, shortfall), Some(ids));
        }
    }
}
