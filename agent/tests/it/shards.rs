//! Sharding in cluster mode: three medic-agent processes with `--shard-count 3` and one
//! unsharded agent over one tansu broker. Together the shards report exactly the unsharded
//! agent's series, each once, and each shard exactly the groups rendezvous hashing gives it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use medic_agent::shard::owner;
use medic_e2e::{commit_offsets, create_topic, get, produce, producer, sample, wait_until, Tansu};

use crate::support::AgentProcess;

const GROUPS: usize = 24;
const SHARDS: u32 = 3;

/// One series: name and sorted labels.
type Series = (String, BTreeMap<String, String>);

/// Parses the sample lines of `families` from a scrape.
fn series(text: &str, families: &[&str]) -> BTreeMap<Series, String> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        if !families.contains(&name) {
            continue;
        }
        let (labels, value) = rest.rsplit_once("} ").expect("labels and value");
        let labels: BTreeMap<String, String> = labels
            .split("\",")
            .map(|kv| {
                let (k, v) = kv.split_once("=\"").expect("label");
                (k.to_string(), v.trim_end_matches('"').to_string())
            })
            .collect();
        let key = (name.to_string(), labels);
        assert!(
            out.insert(key.clone(), value.to_string()).is_none(),
            "series {key:?} twice in one scrape"
        );
    }
    out
}

fn groups_of(s: &BTreeMap<Series, String>) -> BTreeSet<String> {
    s.keys()
        .filter_map(|(_, l)| l.get("consumergroup").cloned())
        .collect()
}

#[test]
fn three_shards_report_exactly_what_one_agent_reports() {
    let tansu = Tansu::start();
    let b = tansu.bootstrap();
    // Static data, all written before any agent starts: topics with records, groups with
    // commits on some of their partitions, and a topic no group consumes.
    let topics = ["orders", "payments", "audit-log", "clicks", "idle"];
    for t in topics {
        create_topic(&b, t, 2);
    }
    let p = producer(&b);
    for (i, t) in topics.iter().enumerate() {
        produce(&p, t, 0, 3 + i);
        produce(&p, t, 1, 1 + i);
    }
    let names: Vec<String> = (0..GROUPS).map(|i| format!("team-{i}-consumer")).collect();
    for (i, g) in names.iter().enumerate() {
        let t = topics[i % 4];
        let mut offsets = vec![(t, 0, (i % 3) as i64)];
        if i % 2 == 0 {
            offsets.push((t, 1, 1));
        }
        commit_offsets(&b, g, &offsets);
    }
    let want: Vec<BTreeSet<String>> = (0..SHARDS)
        .map(|s| {
            names
                .iter()
                .filter(|g| owner(g, SHARDS) == s)
                .cloned()
                .collect()
        })
        .collect();
    assert!(
        want.iter().all(|w| !w.is_empty()),
        "every shard should get some of the {GROUPS} groups: {want:?}"
    );

    let (mut whole, whole_port) = AgentProcess::new(&b)
        .name("medic-agent-unsharded")
        .request_timeout("3s")
        .start();
    let mut shards = Vec::new();
    for i in 0..SHARDS {
        let shard = AgentProcess::new(&b)
            .name(&format!("medic-agent-shard-{i}"))
            .request_timeout("3s")
            .args(&["--shard-count", "3"]);
        // Shard 2 takes its index from the pod name's ordinal, like a StatefulSet pod (through
        // env(1)); the others are given theirs.
        let shard = if i == 2 {
            shard.env("POD_NAME", &format!("medic-agent-{i}"))
        } else {
            shard.args(&["--shard-index".to_string(), i.to_string()])
        };
        shards.push(shard.start());
    }

    // Wait for the first successful collection on every agent: the data is static and complete
    // before they start, and timestamps are read in the same collection (nothing pending).
    let families = [
        "kafka_consumergroup_lag",
        "kafka_consumergroup_current_offset",
        "kafka_consumergroup_lag_seconds",
        "kafka_topic_partition_current_offset",
    ];
    let scrape_when = |port: u16| {
        wait_until(
            Duration::from_secs(30),
            &format!("a complete collection on port {port}"),
            || {
                let t = get(port, "/metrics").body;
                let ok = sample(&t, "medic_agent_groups{cluster=\"e2e\"}").is_some()
                    && sample(&t, "medic_agent_lag_seconds_pending{cluster=\"e2e\"}") == Some(0.0);
                ok.then_some(t)
            },
        )
    };
    let whole_text = scrape_when(whole_port);
    let shard_texts: Vec<String> = shards.iter().map(|(_, port)| scrape_when(*port)).collect();
    let all = series(&whole_text, &families);
    assert_eq!(groups_of(&all).len(), GROUPS, "{whole_text}");

    // Each shard reports exactly its groups; no group is in two shards.
    let mut union: BTreeMap<Series, String> = BTreeMap::new();
    for (i, text) in shard_texts.iter().enumerate() {
        let s = series(text, &families);
        assert_eq!(groups_of(&s), want[i], "shard {i}:\n{text}");
        assert_eq!(
            sample(text, "medic_agent_groups{cluster=\"e2e\"}"),
            Some(want[i].len() as f64),
            "shard {i}"
        );
        for (k, v) in s {
            if let Some(prev) = union.insert(k.clone(), v) {
                panic!("{k:?} reported by two shards (one says {prev})");
            }
        }
    }
    // Lag in seconds grows with time on a lagging partition: compare its values only where the
    // lag is 0 (then it is exactly 0), and its label sets everywhere.
    let lagging = |s: &BTreeMap<Series, String>| -> BTreeMap<Series, String> {
        s.iter()
            .map(|((n, l), v)| {
                let v = if n == "kafka_consumergroup_lag_seconds" && v != "0" {
                    "(positive)".to_string()
                } else {
                    v.clone()
                };
                ((n.clone(), l.clone()), v)
            })
            .collect()
    };
    for ((n, l), v) in all.iter().filter(|((n, _), _)| n.ends_with("_seconds")) {
        assert!(v.parse::<f64>().unwrap() >= 0.0, "{n}{l:?} {v}");
    }
    assert_eq!(
        lagging(&union),
        lagging(&all),
        "the shards' union differs from the unsharded agent"
    );
    // The idle topic, which no group consumes, has its end offsets reported exactly once.
    let idle: Vec<_> = union
        .keys()
        .filter(|(n, l)| {
            n == "kafka_topic_partition_current_offset"
                && l.get("topic").map(String::as_str) == Some("idle")
        })
        .collect();
    assert_eq!(idle.len(), 2, "{idle:?}");

    // The shard is exported, and /healthz names it; the unsharded agent is shard 0 of 1.
    for (i, text) in shard_texts.iter().enumerate() {
        let info = series(text, &["medic_agent_shard_info"]);
        let want_labels: BTreeMap<String, String> = [
            ("cluster", "e2e".to_string()),
            ("shard_count", "3".to_string()),
            ("shard_index", i.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(
            info.into_iter().collect::<Vec<_>>(),
            vec![(
                ("medic_agent_shard_info".to_string(), want_labels),
                "1".to_string()
            )],
            "shard {i}"
        );
        let h = get(shards[i].1, "/healthz").json();
        assert_eq!(
            h["mode"],
            format!("cluster (shard_index {i}, shard_count 3)"),
            "{h}"
        );
    }
    let info = series(&whole_text, &["medic_agent_shard_info"]);
    assert_eq!(info.len(), 1, "{info:?}");
    let ((_, l), v) = info.into_iter().next().unwrap();
    assert_eq!(
        (
            l["shard_index"].as_str(),
            l["shard_count"].as_str(),
            v.as_str()
        ),
        ("0", "1", "1")
    );

    for (s, _) in shards.iter_mut() {
        assert_eq!(
            s.terminate(Duration::from_secs(5)),
            Some(0),
            "{}",
            s.describe()
        );
    }
    assert_eq!(
        whole.terminate(Duration::from_secs(5)),
        Some(0),
        "{}",
        whole.describe()
    );
}
