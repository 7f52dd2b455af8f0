//! `granularity: topic` and `max_series` against a real tansu broker: the exact per (group,
//! topic) and per-group series, and a budget that drops partition series but keeps the totals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use medic_e2e::{commit_offsets, producer, Tansu};

use crate::support::{agent, topic_with_records};

fn samples(text: &str, family: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn topic_granularity_and_series_budget_on_tansu() {
    let tansu = Tansu::start();
    let b = tansu.bootstrap();
    topic_with_records(&b, &producer(&b), "orders", &[5, 2, 9]);
    commit_offsets(
        &b,
        "billing",
        &[("orders", 0, 3), ("orders", 1, 2), ("orders", 2, 1)],
    );

    let mut a = agent(&b, &["--granularity", "topic"]);
    a.collect_once().await;
    let text = a.snapshot.load().lag_text.text();
    let g = r#"cluster="t",consumergroup="billing",topic="orders""#;
    assert_eq!(
        samples(&text, "kafka_consumergroup_lag_sum"),
        vec![format!("kafka_consumergroup_lag_sum{{{g}}} 10")],
        "{text}"
    );
    assert_eq!(
        samples(&text, "kafka_consumergroup_lag_max"),
        vec![format!("kafka_consumergroup_lag_max{{{g}}} 8")]
    );
    assert_eq!(
        samples(&text, "kafka_consumergroup_current_offset_sum"),
        vec![format!("kafka_consumergroup_current_offset_sum{{{g}}} 6")]
    );
    assert_eq!(
        samples(&text, "kafka_topic_current_offset_sum"),
        vec![r#"kafka_topic_current_offset_sum{cluster="t",topic="orders"} 16"#.to_string()]
    );
    assert_eq!(
        samples(&text, "kafka_consumergroup_group_lag_sum"),
        vec![
            r#"kafka_consumergroup_group_lag_sum{cluster="t",consumergroup="billing"} 10"#
                .to_string()
        ]
    );
    assert!(!text.contains("partition="), "{text}");

    // Partition granularity under a budget that cannot hold the partition series: the most
    // lagging partition (2, lag 8) keeps its lag series, the totals stay, the drops are counted.
    let mut a = agent(&b, &["--max-series", "30"]);
    a.collect_once().await;
    let text = a.snapshot.load().lag_text.text();
    assert_eq!(
        samples(&text, "kafka_consumergroup_group_lag_sum"),
        vec![
            r#"kafka_consumergroup_group_lag_sum{cluster="t",consumergroup="billing"} 10"#
                .to_string()
        ],
        "{text}"
    );
    assert_eq!(
        samples(&text, "kafka_consumergroup_lag_sum"),
        vec![format!("kafka_consumergroup_lag_sum{{{g}}} 10")]
    );
    let dropped: u64 = text
        .lines()
        .filter(|l| l.starts_with("medic_agent_series_dropped{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(dropped > 0, "{text}");
    let exported: usize = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"medic_agent_series_exported{cluster="t"} "#))
        .unwrap()
        .parse()
        .unwrap();
    assert!(exported <= 30, "exported {exported}\n{text}");
    assert_eq!(
        samples(&text, "kafka_consumergroup_current_offset"),
        Vec::<String>::new(),
        "committed offsets go first"
    );
}
