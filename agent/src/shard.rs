//! Shards of a cluster-mode agent: which consumer groups, and which topics' end offsets, one
//! process reports when several split a cluster (`shard_index` of `shard_count`).
//!
//! **Assignment.** Rendezvous (highest random weight) hashing: a name belongs to the index `i`
//! in `0..shard_count` with the highest weight `XXH3-64(name, seed = i)` (ties, which need a
//! 64-bit collision, go to the lowest index). Every shard computes the same answer from the
//! name alone, so there is no coordinator and no shared store. Going from N to N+1 shards moves a
//! name only when the new index N outweighs all the others: 1/(N+1) of the names, all to the new
//! shard, none between old shards.
//!
//! **The hash.** XXH3-64 as specified by xxHash 0.8 (crate `xxhash-rust`), over the UTF-8 bytes
//! of the name. Its output is fixed by the specification: the same on every build, Rust version,
//! platform and byte order, so shards built apart (or a rolling update across versions) agree.
//! std's `DefaultHasher` does not promise that. Known answers are pinned in the tests below.
//!
//! **What a shard reports.**
//! - `kafka_consumergroup_*` for the groups it owns (group id hashed). It reads end offsets
//!   only for the partitions those groups have committed offsets on.
//! - `kafka_topic_partition_current_offset` for every partition of the topics it owns (topic name
//!   hashed the same way), so the union over the shards is the unsharded agent's set, each
//!   series once. The cost: a shard also reads the end offsets of its topics' partitions that
//!   none of its groups consume, so the shards together read each partition once for the topic
//!   series plus once per *other* shard with a group on it (at most N times in all), still one
//!   ListOffsets per leader per shard. Every shard also sends its own Metadata and, per
//!   coordinator, ListGroups (the broker cannot filter groups by shard).

use std::collections::HashMap;

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// This process's part of the cluster: index `index` of `count`. `Shard::default()` is the
/// whole cluster (0 of 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

impl Shard {
    /// `None` unless `count >= 1` and `index < count`.
    pub fn new(index: u32, count: u32) -> Option<Shard> {
        (count >= 1 && index < count).then_some(Shard { index, count })
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether this shard reports `name` (a group id or a topic name).
    pub fn owns(&self, name: &str) -> bool {
        self.count <= 1 || owner(name, self.count) == self.index
    }
}

/// The rendezvous weight of `name` for shard `index`.
pub fn weight(name: &str, index: u32) -> u64 {
    xxh3_64_with_seed(name.as_bytes(), u64::from(index))
}

/// The shard index in `0..count` that owns `name` (0 when `count` is 0 or 1).
pub fn owner(name: &str, count: u32) -> u32 {
    let mut best = (0, weight(name, 0));
    for i in 1..count {
        let w = weight(name, i);
        if w > best.1 {
            best = (i, w);
        }
    }
    best.0
}

/// The ordinal of a StatefulSet pod named `<name>-<ordinal>`.
pub fn ordinal_of(pod_name: &str) -> Option<u32> {
    let (_, n) = pod_name.rsplit_once('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// The environment variables the index is read from when `shard_index` is not set, first found
/// wins: `POD_NAME` (the chart sets it from the downward API), then `HOSTNAME` (a pod's host name
/// is its name).
pub const ORDINAL_SOURCES: [&str; 2] = ["POD_NAME", "HOSTNAME"];

/// Builds the shard from the settings. `at(key)` says where a key's value came from; every
/// problem is pushed to `errs`, and the whole cluster is returned after one.
pub(crate) fn resolve(
    index: Option<u32>,
    count: Option<u32>,
    sidecar: bool,
    env: &HashMap<String, String>,
    at: &dyn Fn(&'static str) -> String,
    errs: &mut Vec<String>,
) -> Shard {
    if sidecar && (index.is_some() || count.is_some()) {
        let key = if count.is_some() {
            "shard_count"
        } else {
            "shard_index"
        };
        errs.push(format!(
            "{}: sharding is for cluster mode only; with broker_id (sidecar mode) each sidecar \
             reports the groups its broker coordinates, so the sidecars already split the groups \
             (unset broker_id or the shard settings)",
            at(key)
        ));
        return Shard::default();
    }
    let count_v = count.unwrap_or(1);
    if count_v == 0 {
        errs.push(format!("{} = 0: must be at least 1", at("shard_count")));
        return Shard::default();
    }
    let index_v = match index {
        Some(i) => {
            if i >= count_v {
                errs.push(format!(
                    "{} = {i}: must be less than shard_count ({count_v}); shards are numbered 0 to {}",
                    at("shard_index"),
                    count_v - 1
                ));
                return Shard::default();
            }
            i
        }
        None if count_v == 1 => 0,
        None => {
            let Some((var, name)) = ORDINAL_SOURCES
                .iter()
                .find_map(|v| env.get(*v).filter(|s| !s.is_empty()).map(|s| (*v, s)))
            else {
                errs.push(format!(
                    "{}: not set, so with shard_count {count_v} it is taken from the pod name's \
                     ordinal (<name>-<ordinal>), but neither POD_NAME nor HOSTNAME is set; set \
                     shard_index, or POD_NAME from the downward API (fieldRef metadata.name)",
                    at("shard_index")
                ));
                return Shard::default();
            };
            let Some(ord) = ordinal_of(name) else {
                errs.push(format!(
                    "{}: not set, so with shard_count {count_v} it is taken from the pod name's \
                     ordinal, but env {var} = {name:?} does not end in -<ordinal> (a StatefulSet \
                     pod is named <name>-<ordinal>); set shard_index",
                    at("shard_index")
                ));
                return Shard::default();
            };
            if ord >= count_v {
                errs.push(format!(
                    "env {var} = {name:?}: ordinal {ord} is not less than {} ({count_v}); the \
                     StatefulSet has more replicas than shards",
                    at("shard_count")
                ));
                return Shard::default();
            }
            ord
        }
    };
    Shard {
        index: index_v,
        count: count_v,
    }
}

/// Name of the info metric.
pub(crate) const INFO: &str = "medic_agent_shard_info";

/// Exports `medic_agent_shard_info{shard_index, shard_count} 1` (cluster mode; 0 of 1 when not
/// sharded).
pub(crate) fn export(shard: Shard) {
    metrics::describe_gauge!(
        INFO,
        "Always 1: the shard of the cluster's groups and topics this cluster-mode agent reports (shard_index of shard_count; 0 of 1 when not sharded)."
    );
    metrics::gauge!(
        INFO,
        "shard_index" => shard.index.to_string(),
        "shard_count" => shard.count.to_string()
    )
    .set(1.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn groups(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("consumer-group-{i}")).collect()
    }

    /// |x - mean| <= 5 standard deviations of Binomial(n, p). The ids are fixed, so the test is
    /// deterministic; the bound is what a uniform hash must meet.
    fn within_binomial(x: usize, n: usize, p: f64) -> bool {
        let mean = n as f64 * p;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        (x as f64 - mean).abs() <= 5.0 * sd
    }

    #[test]
    fn the_hash_is_xxh3_64_as_specified() {
        // The XXH3-64 reference value for empty input with seed 0 (xxHash's own test vectors),
        // and seeded values computed independently with the reference C library (Python's
        // `xxhash` package, xxh3_64_intdigest(b"billing", seed=i)). A change of hash, or of how
        // the weight is formed (bytes, seed), changes them and would move groups between shards.
        assert_eq!(weight("", 0), 0x2D06_8005_38D3_94C2);
        assert_eq!(weight("billing", 0), 0xce82_1fc3_25e3_0562);
        assert_eq!(weight("billing", 1), 0x22b9_b213_64ac_b846);
        assert_eq!(weight("billing", 2), 0xdc22_ebf3_93e8_ecb2);
    }

    #[test]
    fn known_owners_of_fixed_ids() {
        let table: [(&str, [u32; 4]); 5] = [
            // name, owner with 1, 2, 3 and 4 shards (also computed with the C library)
            ("billing", [0, 0, 2, 3]),
            ("audit", [0, 0, 2, 2]),
            ("orders-consumer", [0, 1, 2, 2]),
            ("payments.settlement", [0, 1, 1, 1]),
            ("é-unicode-group", [0, 1, 2, 2]),
        ];
        for (name, want) in table {
            let got: Vec<u32> = (1..=4).map(|n| owner(name, n)).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn shards_split_10000_groups_evenly() {
        let gs = groups(10_000);
        for n in [2u32, 3, 5, 8] {
            let mut per = vec![0usize; n as usize];
            for g in &gs {
                per[owner(g, n) as usize] += 1;
            }
            for (i, c) in per.iter().enumerate() {
                assert!(
                    within_binomial(*c, gs.len(), 1.0 / f64::from(n)),
                    "{n} shards: shard {i} has {c} of 10000 groups"
                );
            }
        }
    }

    #[test]
    fn going_from_n_to_n_plus_1_moves_about_1_in_n_plus_1_only_to_the_new_shard() {
        let gs = groups(10_000);
        for n in 1u32..=8 {
            let mut moved = 0;
            for g in &gs {
                let (before, after) = (owner(g, n), owner(g, n + 1));
                if before != after {
                    assert_eq!(after, n, "{g} moved from {before} to old shard {after}");
                    moved += 1;
                }
            }
            let p = 1.0 / f64::from(n + 1);
            assert!(
                within_binomial(moved, gs.len(), p),
                "{n} -> {} shards moved {moved} of 10000 groups, expected about {:.0}",
                n + 1,
                10_000.0 * p
            );
        }
    }

    #[test]
    fn pod_ordinals() {
        assert_eq!(ordinal_of("kafka-medic-agent-0"), Some(0));
        assert_eq!(ordinal_of("agent-12"), Some(12));
        assert_eq!(ordinal_of("agent"), None);
        assert_eq!(ordinal_of("agent-"), None);
        assert_eq!(ordinal_of("agent-+1"), None);
        assert_eq!(ordinal_of("agent-1a"), None);
        assert_eq!(ordinal_of("agent-99999999999"), None);
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn resolve_with(
        index: Option<u32>,
        count: Option<u32>,
        sidecar: bool,
        e: &[(&str, &str)],
    ) -> (Shard, Vec<String>) {
        let mut errs = Vec::new();
        let at = |k: &'static str| format!("flag --{}", k.replace('_', "-"));
        let s = resolve(index, count, sidecar, &env(e), &at, &mut errs);
        (s, errs)
    }

    #[test]
    fn resolve_table() {
        let ok = |i, n| (Shard::new(i, n).unwrap(), Vec::<String>::new());
        assert_eq!(resolve_with(None, None, false, &[]), ok(0, 1));
        assert_eq!(resolve_with(None, None, true, &[]), ok(0, 1));
        assert_eq!(resolve_with(Some(2), Some(3), false, &[]), ok(2, 3));
        assert_eq!(
            resolve_with(None, Some(3), false, &[("POD_NAME", "medic-agent-1")]),
            ok(1, 3)
        );
        assert_eq!(
            resolve_with(None, Some(3), false, &[("HOSTNAME", "medic-agent-2")]),
            ok(2, 3)
        );
        assert_eq!(
            resolve_with(
                None,
                Some(3),
                false,
                &[("POD_NAME", "a-0"), ("HOSTNAME", "a-2")]
            ),
            ok(0, 3),
            "POD_NAME wins over HOSTNAME"
        );
        assert_eq!(
            resolve_with(Some(1), Some(3), false, &[("POD_NAME", "a-0")]),
            ok(1, 3),
            "shard_index wins over the ordinal"
        );
        assert_eq!(
            resolve_with(None, Some(1), false, &[("POD_NAME", "no-ordinal")]),
            ok(0, 1),
            "one shard needs no ordinal"
        );
    }

    #[test]
    fn resolve_errors_name_the_setting_and_why() {
        let err = |i, n, sidecar, e: &[(&str, &str)]| {
            let (s, errs) = resolve_with(i, n, sidecar, e);
            assert_eq!(s, Shard::default());
            assert_eq!(errs.len(), 1, "{errs:?}");
            errs[0].clone()
        };
        assert_eq!(
            err(None, Some(0), false, &[]),
            "flag --shard-count = 0: must be at least 1"
        );
        assert_eq!(
            err(Some(3), Some(3), false, &[]),
            "flag --shard-index = 3: must be less than shard_count (3); shards are numbered 0 to 2"
        );
        assert_eq!(
            err(Some(1), None, false, &[]),
            "flag --shard-index = 1: must be less than shard_count (1); shards are numbered 0 to 0"
        );
    }

    #[test]
    fn resolve_errors_for_sidecars_and_ordinals() {
        let (_, errs) = resolve_with(None, Some(3), true, &[]);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("flag --shard-count: sharding is for cluster mode only; with broker_id (sidecar mode)"),
            "{errs:?}"
        );
        let (_, errs) = resolve_with(Some(0), None, true, &[]);
        assert!(
            errs[0].starts_with("flag --shard-index: sharding is for cluster mode only"),
            "{errs:?}"
        );
        let (_, errs) = resolve_with(None, Some(3), false, &[]);
        assert_eq!(
            errs,
            vec!["flag --shard-index: not set, so with shard_count 3 it is taken from the pod name's ordinal (<name>-<ordinal>), but neither POD_NAME nor HOSTNAME is set; set shard_index, or POD_NAME from the downward API (fieldRef metadata.name)"]
        );
        let (_, errs) = resolve_with(None, Some(3), false, &[("POD_NAME", "medic-agent")]);
        assert_eq!(
            errs,
            vec!["flag --shard-index: not set, so with shard_count 3 it is taken from the pod name's ordinal, but env POD_NAME = \"medic-agent\" does not end in -<ordinal> (a StatefulSet pod is named <name>-<ordinal>); set shard_index"]
        );
        let (_, errs) = resolve_with(None, Some(3), false, &[("HOSTNAME", "medic-agent-3")]);
        assert_eq!(
            errs,
            vec!["env HOSTNAME = \"medic-agent-3\": ordinal 3 is not less than flag --shard-count (3); the StatefulSet has more replicas than shards"]
        );
    }

    proptest! {
        #[test]
        fn every_name_has_exactly_one_owner(name in "\\PC{0,40}", n in 1u32..16) {
            let owners: Vec<u32> = (0..n)
                .filter(|i| Shard::new(*i, n).is_some_and(|s| s.owns(&name)))
                .collect();
            prop_assert_eq!(owners, vec![owner(&name, n)]);
        }

        #[test]
        fn adding_a_shard_moves_a_name_only_to_it(name in "\\PC{0,40}", n in 1u32..16) {
            let (before, after) = (owner(&name, n), owner(&name, n + 1));
            prop_assert!(after == before || after == n, "{} -> {}", before, after);
        }
    }
}
