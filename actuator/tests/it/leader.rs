//! Leader election between two real actuator processes sharing one fake Lease API
//! (`support/fake_lease.rs`), each reaching it through its own endpoint so that one can be cut
//! off. Short settings: lease_duration 3s, renew_deadline 2s, retry_period 500ms.

use crate::support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use jiff::Timestamp;
use serde_json::Value;
use support::fake_lease::{assert_disjoint, intervals, Cut, Endpoint, LeaseApi, LeaseRequest};
use support::harness::{fake_kube, metric};
use support::process::{client, post, Running};
use support::*;

const LEASE: Duration = Duration::from_secs(3);
const RENEW: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(500);
/// Slack for a loaded 2-core CI machine on bounds that are upper limits of a wait.
const LOAD_MARGIN: Duration = Duration::from_secs(2);
const NS: &str = "medic";
const NAME: &str = "medic-actuator";

struct Replica {
    id: &'static str,
    run: Option<Running>,
    endpoint: Endpoint,
    audit: PathBuf,
}

impl Replica {
    fn run(&self) -> &Running {
        self.run.as_ref().expect("the replica runs")
    }

    fn dump(&self) -> String {
        self.run
            .as_ref()
            .map(Running::dump)
            .unwrap_or_else(|| format!("{} is not running", self.id))
    }

    /// The leadership records of its audit log: (action, ts, message).
    fn leadership_records(&self) -> Vec<(String, Timestamp, String)> {
        audit_lines(&self.audit)
            .into_iter()
            .filter(|r| r["trigger"] == "election")
            .map(|r| {
                (
                    r["action"].as_str().unwrap().to_string(),
                    r["ts"].as_str().unwrap().parse().unwrap(),
                    r["message"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

fn config(files: &Files, id: &str, api: &str) -> (PathBuf, PathBuf) {
    let dir = files.path(id);
    std::fs::create_dir_all(&dir).unwrap();
    let audit = dir.join("audit.log");
    let p = dir.join("actuator.yaml");
    std::fs::write(
        &p,
        format!(
            "listen: 127.0.0.1:0\npolicies_file: {}\ninstance: {id}\nauth: {{bearer_token_file: {}}}\naudit: {{path: {}}}\nkubernetes: {{api_url: \"{api}\", retry_backoff: 10ms, retry_attempts: 2}}\nreevaluate_interval: 1s\nleader_election: {{enabled: true, identity: {id}, namespace: {NS}, lease_name: {NAME}, lease_duration: 3s, renew_deadline: 2s, retry_period: 500ms}}\n",
            files.path("policies.yaml").display(),
            files.path("token").display(),
            audit.display(),
        ),
    )
    .unwrap();
    (p, audit)
}

async fn start(files: &Files, api: &LeaseApi, kube: &FakeKube, id: &'static str) -> Replica {
    let endpoint = api.endpoint(id, Some(kube)).await;
    let (path, audit) = config(files, id, &endpoint.uri());
    let run = Running::start(&path);
    Replica {
        id,
        run: Some(run),
        endpoint,
        audit,
    }
}

async fn get_json(c: &reqwest::Client, url: &str) -> Option<Value> {
    let r = c.get(url).bearer_auth(TOKEN).send().await.ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json().await.ok()
}

/// `/api/v1/state`'s `leader` object.
async fn leader(c: &reqwest::Client, r: &Replica) -> Value {
    let state = get_json(c, &r.run().url("/api/v1/state"))
        .await
        .unwrap_or_else(|| panic!("no state from {}\n{}", r.id, r.dump()));
    state["leader"].clone()
}

async fn metrics(c: &reqwest::Client, r: &Replica) -> String {
    c.get(r.run().url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Polls `f` until it gives a value (a generous deadline: CI is a loaded 2-core machine).
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until exactly one of the two leads (panics if both ever report it); its index.
async fn one_leader(c: &reqwest::Client, reps: &[Replica; 2]) -> usize {
    eventually(60, "one replica to lead", || async {
        let (a, b) = (leader(c, &reps[0]).await, leader(c, &reps[1]).await);
        match (a["is_leader"].as_bool(), b["is_leader"].as_bool()) {
            (Some(true), Some(true)) => panic!("both lead: {a} {b}"),
            (Some(true), _) => Some(0),
            (_, Some(true)) => Some(1),
            _ => None,
        }
    })
    .await
}

fn wall(t: SystemTime) -> Timestamp {
    Timestamp::try_from(t).unwrap()
}

fn last_write_by(api: &LeaseApi, id: &str) -> LeaseRequest {
    api.applied()
        .into_iter()
        .rfind(|r| r.client == id)
        .unwrap_or_else(|| panic!("no write by {id}"))
}

fn takeover_by(api: &LeaseApi, id: &str) -> Option<LeaseRequest> {
    api.applied()
        .into_iter()
        .find(|r| r.client == id && r.holder() == Some(id))
}

/// (action, ts) of each leadership record, for [`intervals`].
fn actions_at(records: &[(String, Timestamp, String)]) -> Vec<(String, Timestamp)> {
    records.iter().map(|(a, t, _)| (a.clone(), *t)).collect()
}

fn broker_payload() -> Vec<u8> {
    payload(
        "firing",
        vec![broker_alert_at(
            "firing",
            "fp-overloaded-1",
            "KafkaBrokerOverloaded",
            "prod",
            "1",
            "2026-11-22T03:32:35.536Z",
        )],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_replicas_leads_and_a_killed_leader_is_replaced_within_the_lease_duration() {
    let files = Files::new();
    files.add_brokers("  - {cluster: prod, backend: log-only, expected_brokers: 3}\n");
    let api = LeaseApi::default();
    let kube = fake_kube();
    let reps = [
        start(&files, &api, &kube, "actuator-a").await,
        start(&files, &api, &kube, "actuator-b").await,
    ];
    let c = client();
    let l = one_leader(&c, &reps).await;
    let f = 1 - l;
    let (lid, fid) = (reps[l].id, reps[f].id);
    // The follower has seen who leads; both views, the gauges and the audit agree.
    let follower_view = eventually(30, "the follower to see the holder", || async {
        let v = leader(&c, &reps[f]).await;
        (v["holder"] == lid).then_some(v)
    })
    .await;
    assert_eq!(
        follower_view,
        serde_json::json!({"enabled": true, "is_leader": false, "holder": lid, "identity": fid,
            "lease": "medic/medic-actuator", "since": null}),
        "{}",
        reps[f].dump()
    );
    let leader_view = leader(&c, &reps[l]).await;
    assert_eq!(leader_view["is_leader"], true);
    assert_eq!(leader_view["holder"], lid);
    assert_eq!(leader_view["identity"], lid);
    assert!(leader_view["since"].is_string(), "{leader_view}");
    let healthz = get_json(&c, &reps[l].run().url("/healthz")).await.unwrap();
    assert_eq!(healthz["leader"], leader_view);
    assert_eq!(api.holder(NS, NAME).as_deref(), Some(lid));
    for (i, want) in [(l, 1.0), (f, 0.0)] {
        let m = metrics(&c, &reps[i]).await;
        let series = format!("medic_actuator_leader{{instance=\"{}\"}}", reps[i].id);
        assert_eq!(metric(&m, &series), want, "{series}\n{m}");
        assert!(m.contains(&format!("{series} ")), "{series} missing\n{m}");
    }
    let records = reps[l].leadership_records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].0, "acquire_leadership");
    assert_eq!(
        records[0].2,
        format!("acquired the Lease medic/medic-actuator as {lid} (leaseTransitions 0); this replica now acts on brokers and runs the re-evaluation")
    );
    assert_eq!(reps[f].leadership_records(), vec![]);

    // A broker alert: the follower audits it as not_leader and acts on nothing; the leader
    // runs its gates (here: still settling).
    let (s, body) = post(&c, reps[f].run(), broker_payload()).await.unwrap();
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["results"][0]["reason"], "not_leader", "{body}");
    assert_eq!(body["results"][0]["outcome"], "skipped", "{body}");
    let record = audit_lines(&reps[f].audit)
        .into_iter()
        .find(|r| r["alertname"] == "KafkaBrokerOverloaded")
        .unwrap();
    assert_eq!(record["reason"], "not_leader");
    assert_eq!(record["action"], "none");
    assert_eq!(
        record["message"],
        "this replica does not hold the leader Lease; only the leader acts on brokers"
    );
    let (s, body) = post(&c, reps[l].run(), broker_payload()).await.unwrap();
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["results"][0]["reason"], "settling", "{body}");

    // kill -9 the leader: no release, the follower must wait out the Lease.
    let mut reps = reps;
    let killed = Instant::now();
    reps[l].run.take().unwrap().kill9();
    eventually(60, "the follower to take over", || async {
        (leader(&c, &reps[f]).await["is_leader"] == true).then_some(())
    })
    .await;
    let last = last_write_by(&api, lid);
    let take = takeover_by(&api, fid).expect("the takeover write");
    let after_kill = take.at - killed;
    let after_last_renewal = take.at - last.at;
    println!(
        "takeover after kill -9: {after_kill:?} after the kill, {after_last_renewal:?} after the killed leader's last renewal (lease_duration {LEASE:?}, retry_period {RETRY:?})"
    );
    assert!(
        after_last_renewal >= LEASE,
        "taken over {after_last_renewal:?} after the holder's last renewal, before lease_duration"
    );
    assert!(
        after_kill <= LEASE + RETRY + LOAD_MARGIN,
        "takeover took {after_kill:?}\n{}",
        reps[f].dump()
    );
    let lease = api.lease(NS, NAME).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], fid);
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 3);
    let records = reps[f].leadership_records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        records[0].2,
        format!("acquired the Lease medic/medic-actuator as {fid} (leaseTransitions 1, taken over from {lid}); this replica now acts on brokers and runs the re-evaluation")
    );
    let acquired = records[0].1;
    let m = metrics(&c, &reps[f]).await;
    assert_eq!(
        metric(&m, &format!("medic_actuator_leader{{instance=\"{fid}\"}}")),
        1.0
    );
    // Now leading, it re-evaluates the broker alert it was sent as a follower (a round would have
    // audited it, settling instead of not_leader); as a follower, through the seconds it waited
    // for the Lease, it ran no round.
    eventually(
        30,
        "the new leader to re-evaluate the tracked broker alert",
        || async {
            audit_lines(&reps[f].audit)
                .into_iter()
                .find(|r| r["trigger"] == "reevaluate" && r["alertname"] == "KafkaBrokerOverloaded")
        },
    )
    .await;
    for r in audit_lines(&reps[f].audit)
        .iter()
        .filter(|r| r["trigger"] == "reevaluate")
    {
        let ts: Timestamp = r["ts"].as_str().unwrap().parse().unwrap();
        assert!(
            ts >= acquired,
            "re-evaluated at {ts}, before leading at {acquired}: {r}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_stops_before_its_lease_expires_and_never_overlaps() {
    let files = Files::new();
    let api = LeaseApi::default();
    let kube = fake_kube();
    let reps = [
        start(&files, &api, &kube, "actuator-a").await,
        start(&files, &api, &kube, "actuator-b").await,
    ];
    let c = client();
    let l = one_leader(&c, &reps).await;
    let f = 1 - l;
    let (lid, fid) = (reps[l].id, reps[f].id);

    // Sample both replicas' state side by side for the whole test.
    let samples: Arc<Mutex<Vec<(Instant, [bool; 2])>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, stop, c) = (samples.clone(), stop.clone(), c.clone());
        let urls = [
            reps[l].run().url("/api/v1/state"),
            reps[f].run().url("/api/v1/state"),
        ];
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let (x, y) = futures::join!(get_json(&c, &urls[0]), get_json(&c, &urls[1]));
                if let (Some(x), Some(y)) = (x, y) {
                    let flags = [
                        x["leader"]["is_leader"] == true,
                        y["leader"]["is_leader"] == true,
                    ];
                    assert!(!(flags[0] && flags[1]), "both lead at once: {x} {y}");
                    samples.lock().unwrap().push((Instant::now(), flags));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    eventually(30, "the follower to see the holder", || async {
        (leader(&c, &reps[f]).await["holder"] == lid).then_some(())
    })
    .await;

    // Cut the leader off: its requests get no answer at all.
    reps[l].endpoint.set(Cut::Hang);
    let down = eventually(30, "the cut-off leader to step down", || async {
        let v = leader(&c, &reps[l]).await;
        (v["is_leader"] == false).then_some(v)
    })
    .await;
    let last = last_write_by(&api, lid);
    let last_wall = wall(last.wall);
    let since: Timestamp = down["since"].as_str().unwrap().parse().unwrap();
    let records = reps[l].leadership_records();
    let (action, lost_at, message) = records.last().cloned().unwrap();
    assert_eq!(action, "lose_leadership");
    assert_eq!(lost_at, since, "the state's since is the step-down");
    assert!(
        message.starts_with("stepped down from the Lease medic/medic-actuator: not renewed for renew_deadline 2s (last error: unavailable: "),
        "{message}"
    );
    let stepped = lost_at.duration_since(last_wall);
    println!("the cut-off leader stepped down {stepped:#} after its last successful renewal (renew_deadline {RENEW:?}, lease_duration {LEASE:?})");
    assert!(
        stepped < jiff::SignedDuration::try_from(LEASE).unwrap(),
        "stepped down {stepped:#} after its last renewal: its Lease could have expired first"
    );
    assert!(
        stepped >= jiff::SignedDuration::from_secs(1),
        "stepped down only {stepped:#} after its last renewal, long before renew_deadline"
    );

    // The other replica takes over, but only once the record has been unchanged for the Lease
    // duration since it first saw its last version.
    eventually(60, "the other replica to take over", || async {
        (leader(&c, &reps[f]).await["is_leader"] == true).then_some(())
    })
    .await;
    let take = takeover_by(&api, fid).expect("the takeover write");
    let seen = api
        .log()
        .into_iter()
        .find(|r| r.client == fid && r.method == "GET" && r.rv() == last.rv())
        .expect("the follower read the leader's last version");
    let waited = take.at - seen.at;
    println!(
        "takeover {waited:?} after the follower first saw the last version, {:?} after the last renewal",
        take.at - last.at
    );
    assert!(
        waited >= LEASE,
        "took over {waited:?} after first seeing the last version"
    );
    assert!(
        waited <= LEASE + RETRY + LOAD_MARGIN,
        "took over only {waited:?} after first seeing the last version"
    );

    // Heal: the old leader sees the new holder and stays a follower.
    reps[l].endpoint.set(Cut::No);
    eventually(30, "the old leader to see the new holder", || async {
        let v = leader(&c, &reps[l]).await;
        (v["holder"] == fid && v["is_leader"] == false).then_some(())
    })
    .await;
    // Four more renewals of the new leader with both replicas on the API.
    let healed = api.applied().len();
    eventually(30, "four more renewals", || async {
        (api.applied()[healed..]
            .iter()
            .filter(|r| r.client == fid)
            .count()
            >= 4)
            .then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    let samples = samples.lock().unwrap().clone();
    let first_new = samples
        .iter()
        .position(|(_, s)| s[1])
        .expect("samples of the new leader");
    assert!(
        samples[..first_new].iter().any(|(_, s)| s[0]),
        "no sample of the old leader leading"
    );
    assert!(
        samples[first_new..].iter().all(|(_, s)| !s[0]),
        "the old leader led again"
    );
    println!(
        "{} samples of both replicas, never two leaders",
        samples.len()
    );
    assert!(samples.len() >= 20, "too few samples: {}", samples.len());
    assert_disjoint(
        &intervals(&actions_at(&reps[l].leadership_records())),
        &intervals(&actions_at(&reps[f].leadership_records())),
    );
    assert_eq!(
        reps[f].leadership_records().len(),
        1,
        "{:?}",
        reps[f].leadership_records()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_with_sigterm_releases_the_lease_and_the_other_takes_over_at_once() {
    let files = Files::new();
    let api = LeaseApi::default();
    let kube = fake_kube();
    let mut reps = [
        start(&files, &api, &kube, "actuator-a").await,
        start(&files, &api, &kube, "actuator-b").await,
    ];
    let c = client();
    let l = one_leader(&c, &reps).await;
    let f = 1 - l;
    let (lid, fid) = (reps[l].id, reps[f].id);
    eventually(30, "the follower to see the holder", || async {
        (leader(&c, &reps[f]).await["holder"] == lid).then_some(())
    })
    .await;
    let pid = reps[l].run().child.id();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = {
        let child = &mut reps[l].run.as_mut().unwrap().child;
        eventually(30, "the leader to exit", || {
            let s = child.try_wait().unwrap();
            async move { s }
        })
        .await
    };
    assert!(status.success(), "exit {status:?}\n{}", reps[l].dump());
    let release = api
        .applied()
        .into_iter()
        .find(|r| r.client == lid && r.holder().is_none())
        .unwrap_or_else(|| panic!("no release write\n{}", reps[l].dump()));
    let released = release.lease.clone().unwrap();
    assert_eq!(released["spec"]["leaseDurationSeconds"], 1);
    assert_eq!(released["spec"]["leaseTransitions"], 0);
    let records = reps[l].leadership_records();
    let (action, _, message) = records.last().cloned().unwrap();
    assert_eq!(action, "release_leadership");
    assert_eq!(
        message,
        "released the Lease medic/medic-actuator on shutdown: stopped acting, and its holder is cleared so another replica takes over at its next attempt"
    );
    eventually(30, "the other replica to take over", || async {
        (leader(&c, &reps[f]).await["is_leader"] == true).then_some(())
    })
    .await;
    let take = takeover_by(&api, fid).unwrap();
    let after = take.at - release.at;
    println!("takeover {after:?} after the release (lease_duration {LEASE:?})");
    assert!(
        after <= RETRY + Duration::from_secs(1),
        "took {after:?} after the release: it waited for the lease to expire?"
    );
    assert_eq!(api.lease(NS, NAME).unwrap()["spec"]["leaseTransitions"], 1);
    assert_disjoint(
        &intervals(&actions_at(&reps[l].leadership_records())),
        &intervals(&actions_at(&reps[f].leadership_records())),
    );
}

/// The fake itself: the API server's answers, and the switch of one endpoint only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_lease_api_is_strict_and_cuts_one_endpoint_only() {
    let api = LeaseApi::default();
    let (a, b) = (api.endpoint("a", None).await, api.endpoint("b", None).await);
    let c = client();
    let url = |e: &Endpoint, name: &str| {
        format!(
            "{}/apis/coordination.k8s.io/v1/namespaces/{NS}/leases{name}",
            e.uri()
        )
    };
    let lease = |rv: Option<&str>, holder: &str| {
        let mut l = serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": NAME},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3,
                "renewTime": "2027-01-15T08:00:00.000000Z", "leaseTransitions": 0}});
        if let Some(rv) = rv {
            l["metadata"]["resourceVersion"] = rv.into();
        }
        l
    };
    let send = |m: reqwest::Method, u: String, body: Option<Value>| {
        let c = c.clone();
        async move {
            let mut r = c.request(m, u);
            if let Some(b) = body {
                r = r.json(&b);
            }
            let r = r.send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let one = format!("/{NAME}");
    let (s, body) = send(reqwest::Method::GET, url(&a, &one), None).await;
    assert_eq!((s, body["reason"].as_str()), (404, Some("NotFound")));
    let (s, created) = send(reqwest::Method::POST, url(&a, ""), Some(lease(None, "a"))).await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["metadata"]["resourceVersion"], "1");
    let (s, body) = send(reqwest::Method::POST, url(&b, ""), Some(lease(None, "b"))).await;
    assert_eq!((s, body["reason"].as_str()), (409, Some("AlreadyExists")));
    let (s, body) = send(
        reqwest::Method::PUT,
        url(&b, &one),
        Some(lease(Some("0"), "b")),
    )
    .await;
    assert_eq!((s, body["reason"].as_str()), (409, Some("Conflict")));
    let (s, body) = send(reqwest::Method::PUT, url(&b, &one), Some(lease(None, "b"))).await;
    assert_eq!(s, 400, "{body}");
    let mut no_spec = lease(Some("1"), "b");
    no_spec.as_object_mut().unwrap().remove("spec");
    let (s, body) = send(reqwest::Method::PUT, url(&b, &one), Some(no_spec)).await;
    assert_eq!(
        (s, body["message"].as_str()),
        (400, Some("spec: Required value"))
    );
    let (s, body) = send(
        reqwest::Method::PUT,
        url(&b, "/other"),
        Some(lease(Some("1"), "b")),
    )
    .await;
    assert_eq!(s, 400, "name mismatch: {body}");
    let (s, updated) = send(
        reqwest::Method::PUT,
        url(&b, &one),
        Some(lease(Some("1"), "b")),
    )
    .await;
    assert_eq!(s, 200, "{updated}");
    assert_eq!(updated["metadata"]["resourceVersion"], "2");
    assert_eq!(api.holder(NS, NAME).as_deref(), Some("b"));
    // Cut b off: b gets 503, a still reads the same state.
    b.set(Cut::Unavailable);
    let (s, _) = send(reqwest::Method::GET, url(&b, &one), None).await;
    assert_eq!(s, 503);
    let (s, body) = send(reqwest::Method::GET, url(&a, &one), None).await;
    assert_eq!(
        (s, body["spec"]["holderIdentity"].as_str()),
        (200, Some("b"))
    );
    let log = api.log();
    let last_b = log.iter().rev().find(|r| r.client == "b").unwrap();
    assert_eq!(
        (last_b.method.as_str(), last_b.status, last_b.path.as_str()),
        (
            "GET",
            503,
            "/apis/coordination.k8s.io/v1/namespaces/medic/leases/medic-actuator"
        )
    );
    assert_eq!(api.applied().len(), 2);
}
