//! The election state machine on tokio's paused clock, against an in-memory Lease store with
//! the API server's preconditions (resourceVersion, 409, 404) and switches to cut one replica
//! off (no answer, or 503).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;

const LEASE: Duration = Duration::from_secs(3);
const RENEW: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(500);
const T0: i64 = 1_800_000_000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cut {
    No,
    Hang,
    Fail,
}

#[derive(Default)]
struct MemState {
    lease: Option<Lease>,
    rv: u64,
    /// Every successful write: when it was applied, and what was stored.
    writes: Vec<(Instant, Lease)>,
    conflicts: usize,
}

/// The API server's view of one Lease.
#[derive(Default)]
struct Mem {
    state: Mutex<MemState>,
}

impl Mem {
    fn lease(&self) -> Option<Lease> {
        self.state.lock().unwrap().lease.clone()
    }

    fn spec(&self) -> LeaseSpec {
        self.lease().unwrap().spec.unwrap()
    }

    fn writes(&self) -> Vec<(Instant, Lease)> {
        self.state.lock().unwrap().writes.clone()
    }

    fn conflicts(&self) -> usize {
        self.state.lock().unwrap().conflicts
    }

    /// Another writer (kubectl, a replica of another build): change the record in place.
    fn overwrite(&self, f: impl FnOnce(&mut Lease)) {
        let mut s = self.state.lock().unwrap();
        s.rv += 1;
        let rv = s.rv.to_string();
        let lease = s.lease.as_mut().unwrap();
        f(lease);
        lease.metadata.resource_version = Some(rv);
    }

    /// A Lease held by `holder` as another replica would have written it.
    fn seed(&self, holder: &str, renew: Timestamp, transitions: i32) {
        let mut s = self.state.lock().unwrap();
        s.rv = 7;
        s.lease = Some(Lease {
            metadata: ObjectMeta {
                name: Some("medic-actuator".into()),
                namespace: Some("medic".into()),
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(3),
                acquire_time: Some(MicroTime(renew)),
                renew_time: Some(MicroTime(renew)),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        });
    }
}

/// One replica's connection to [`Mem`], with its own switch.
struct Conn {
    mem: Arc<Mem>,
    cut: Mutex<Cut>,
}

impl Conn {
    fn new(mem: &Arc<Mem>) -> Arc<Self> {
        Arc::new(Self {
            mem: mem.clone(),
            cut: Mutex::new(Cut::No),
        })
    }

    fn set(&self, cut: Cut) {
        *self.cut.lock().unwrap() = cut;
    }

    async fn gate(&self) -> Result<(), LeaseError> {
        // A request takes a turn of the scheduler, so two replicas' requests interleave.
        tokio::task::yield_now().await;
        let cut = *self.cut.lock().unwrap();
        match cut {
            Cut::No => Ok(()),
            Cut::Hang => futures::future::pending().await,
            Cut::Fail => Err(LeaseError::Unavailable("HTTP 503: injected".into())),
        }
    }

    fn write(&self, lease: &Lease, create: bool) -> Result<Lease, LeaseError> {
        let mut s = self.mem.state.lock().unwrap();
        if lease.spec.is_none() {
            return Err(LeaseError::Refused {
                code: 400,
                message: "spec is required".into(),
            });
        }
        match (&s.lease, create) {
            (Some(_), true) => {
                s.conflicts += 1;
                return Err(LeaseError::Conflict(
                    "leases \"medic-actuator\" already exists".into(),
                ));
            }
            (None, false) => {
                return Err(LeaseError::Refused {
                    code: 404,
                    message: "not found".into(),
                })
            }
            (Some(current), false)
                if current.metadata.resource_version != lease.metadata.resource_version =>
            {
                s.conflicts += 1;
                return Err(LeaseError::Conflict("the object has been modified".into()));
            }
            _ => {}
        }
        s.rv += 1;
        let mut stored = lease.clone();
        stored.metadata.resource_version = Some(s.rv.to_string());
        s.lease = Some(stored.clone());
        s.writes.push((Instant::now(), stored.clone()));
        Ok(stored)
    }
}

impl LeaseStore for Conn {
    fn get(&self) -> BoxFuture<'_, Result<Option<Lease>, LeaseError>> {
        Box::pin(async move {
            self.gate().await?;
            Ok(self.mem.lease())
        })
    }

    fn create<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        Box::pin(async move {
            self.gate().await?;
            self.write(lease, true)
        })
    }

    fn replace<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseError>> {
        Box::pin(async move {
            self.gate().await?;
            self.write(lease, false)
        })
    }
}

/// The audit records, each with this replica's leadership at the moment it was written.
#[derive(Default)]
struct Memo {
    records: Mutex<Vec<(AuditRecord, bool, Instant)>>,
    view: Mutex<Option<Leadership>>,
    broken: AtomicBool,
    failed_writes: AtomicUsize,
}

impl Memo {
    fn actions(&self) -> Vec<(Action, bool)> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .map(|(r, leading, _)| (r.action, *leading))
            .collect()
    }

    fn last(&self) -> (AuditRecord, bool, Instant) {
        self.records.lock().unwrap().last().cloned().unwrap()
    }
}

impl Journal for Memo {
    fn write(&self, record: AuditRecord) -> BoxFuture<'_, Result<u64, EngineError>> {
        Box::pin(async move {
            if self.broken.load(Ordering::SeqCst) {
                self.failed_writes.fetch_add(1, Ordering::SeqCst);
                return Err(EngineError::Audit(crate::audit::AuditError::Stopped));
            }
            let leading = self
                .view
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(Leadership::is_leader);
            let mut records = self.records.lock().unwrap();
            records.push((record, leading, Instant::now()));
            Ok(records.len() as u64)
        })
    }
}

struct Replica {
    view: Leadership,
    memo: Arc<Memo>,
    conn: Arc<Conn>,
    telemetry: Arc<Telemetry>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Replica {
    fn start(id: &str, mem: &Arc<Mem>) -> Self {
        let conn = Conn::new(mem);
        let memo = Arc::new(Memo::default());
        let telemetry = Arc::new(Telemetry::new());
        let base = Instant::now();
        let clock: Clock = Arc::new(move || {
            let elapsed = jiff::SignedDuration::try_from(Instant::now() - base).unwrap();
            Timestamp::from_second(T0).unwrap() + elapsed
        });
        let settings = ElectionSettings {
            identity: id.into(),
            namespace: "medic".into(),
            lease_name: "medic-actuator".into(),
            lease_duration: LEASE,
            renew_deadline: RENEW,
            retry_period: RETRY,
            request_timeout: RENEW / 2,
            instance: format!("{id}-instance"),
            dry_run: false,
        };
        let (election, view) =
            Election::new(settings, conn.clone(), memo.clone(), &telemetry, clock);
        *memo.view.lock().unwrap() = Some(view.clone());
        let stop = CancellationToken::new();
        let task = tokio::spawn(election.run(stop.clone()));
        Self {
            view,
            memo,
            conn,
            telemetry,
            stop,
            task,
        }
    }

    /// Waits (on the paused clock) until this replica's leadership is `leading`; returns when.
    async fn until(&self, leading: bool) -> Instant {
        let mut rx = self.view.subscribe();
        tokio::time::timeout(Duration::from_secs(120), rx.wait_for(|l| *l == leading))
            .await
            .unwrap_or_else(|_| panic!("leadership never became {leading}"))
            .unwrap();
        Instant::now()
    }

    async fn stop(self) -> Arc<Memo> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .unwrap()
            .unwrap();
        self.memo
    }
}

fn ts(m: &Option<MicroTime>) -> Timestamp {
    m.as_ref().unwrap().0
}

#[tokio::test(start_paused = true)]
async fn takes_over_only_after_the_record_is_unchanged_for_lease_duration_on_its_own_clock() {
    let mem = Arc::new(Mem::default());
    // The record's renewTime is from another clock, decades old: it must not count.
    mem.seed("old-pod", Timestamp::from_second(946_684_800).unwrap(), 4);
    let start = Instant::now();
    let me = Replica::start("me", &mem);
    tokio::time::sleep(LEASE - Duration::from_millis(100)).await;
    assert!(!me.view.is_leader(), "took over before lease_duration");
    assert_eq!(mem.spec().holder_identity.as_deref(), Some("old-pod"));
    assert_eq!(me.view.status().holder.as_deref(), Some("old-pod"));
    let took = me.until(true).await - start;
    assert!(
        took >= LEASE && took <= LEASE + RETRY,
        "took over after {took:?}"
    );
    let spec = mem.spec();
    assert_eq!(spec.holder_identity.as_deref(), Some("me"));
    assert_eq!(
        spec.lease_transitions,
        Some(5),
        "a takeover counts a transition"
    );
    assert_eq!(spec.lease_duration_seconds, Some(3));
    assert_eq!(ts(&spec.acquire_time), ts(&spec.renew_time));
    assert_eq!(
        ts(&spec.acquire_time),
        Timestamp::from_second(T0).unwrap() + jiff::SignedDuration::try_from(took).unwrap()
    );
    // The acquisition was recorded while this replica was not leading yet.
    let (record, leading, _) = me.memo.last();
    assert_eq!((record.action, leading), (Action::AcquireLeadership, false));
    assert_eq!(record.trigger, Trigger::Election);
    assert_eq!(record.outcome, Outcome::Applied);
    assert_eq!(record.instance, "me-instance");
    assert_eq!(
        record.message,
        "acquired the Lease medic/medic-actuator as me (leaseTransitions 5, taken over from old-pod); this replica now acts on brokers and runs the re-evaluation"
    );
    let status = me.view.status();
    assert_eq!(
        status,
        crate::leader::LeaderStatus {
            enabled: true,
            is_leader: true,
            holder: Some("me".into()),
            identity: Some("me".into()),
            lease: Some("medic/medic-actuator".into()),
            since: Some(ts(&spec.acquire_time)),
        }
    );
    assert!(
        me.telemetry
            .render()
            .contains("medic_actuator_leader{instance=\"me\"} 1"),
        "{}",
        me.telemetry.render()
    );
    // Renewals keep acquireTime and the transitions, and move renewTime.
    tokio::time::sleep(RETRY * 3).await;
    let renewed = mem.spec();
    assert_eq!(renewed.acquire_time, spec.acquire_time);
    assert_eq!(renewed.lease_transitions, Some(5));
    assert!(ts(&renewed.renew_time) > ts(&spec.renew_time));
    me.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_record_that_keeps_changing_is_never_taken_over() {
    let mem = Arc::new(Mem::default());
    mem.seed("other", Timestamp::from_second(T0).unwrap(), 0);
    let start = Instant::now();
    let me = Replica::start("me", &mem);
    // The holder renews every second for 5 s: each change restarts the candidate's wait.
    for i in 1..=5 {
        tokio::time::sleep_until(start + Duration::from_secs(i)).await;
        assert!(!me.view.is_leader(), "took over a live Lease at {i}s");
        mem.overwrite(|l| {
            l.spec.as_mut().unwrap().renew_time =
                Some(MicroTime(Timestamp::from_second(T0 + i as i64).unwrap()));
        });
    }
    let took = me.until(true).await - start;
    assert!(
        took >= Duration::from_secs(5) + LEASE && took <= Duration::from_secs(5) + LEASE + RETRY,
        "took over {took:?} after start; the last change was at 5s"
    );
    assert_eq!(mem.spec().lease_transitions, Some(1));
    me.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_leader_steps_down_at_renew_deadline_before_its_lease_expires() {
    for cut in [Cut::Hang, Cut::Fail] {
        let mem = Arc::new(Mem::default());
        let me = Replica::start("me", &mem);
        let led = me.until(true).await;
        assert_eq!(
            mem.spec().lease_transitions,
            Some(0),
            "created, not taken over"
        );
        tokio::time::sleep_until(led + Duration::from_millis(1200)).await;
        me.conn.set(cut);
        let down = me.until(false).await;
        let (last_write, _) = mem.writes().last().cloned().unwrap();
        let after = down - last_write;
        assert!(
            after >= RENEW && after <= RENEW + Duration::from_millis(5),
            "{cut:?}: stepped down {after:?} after the last successful renewal"
        );
        assert!(
            after < LEASE,
            "{cut:?}: still leading when the Lease could expire"
        );
        let (record, leading, at) = me.memo.last();
        assert_eq!(at, down, "{cut:?}: recorded at once");
        assert_eq!((record.action, leading), (Action::LoseLeadership, false));
        let why = match cut {
            Cut::Hang => "unavailable: no answer within 1s",
            _ => "unavailable: HTTP 503: injected",
        };
        assert_eq!(
            record.message,
            format!("stepped down from the Lease medic/medic-actuator: not renewed for renew_deadline 2s (last error: {why}); no broker action or re-evaluation starts here until it is acquired again"),
            "{cut:?}"
        );
        assert!(me
            .telemetry
            .render()
            .contains("medic_actuator_leader{instance=\"me\"} 0"));
        // Nothing else wrote: when the API answers again, the Lease still names this replica,
        // which takes it back at once (no transition).
        me.conn.set(Cut::No);
        let back = me.until(true).await;
        assert!(
            back - down <= RETRY + RENEW / 2,
            "{cut:?}: {:?}",
            back - down
        );
        assert_eq!(mem.spec().lease_transitions, Some(0));
        assert_eq!(
            me.memo.actions(),
            vec![
                (Action::AcquireLeadership, false),
                (Action::LoseLeadership, false),
                (Action::AcquireLeadership, false),
            ]
        );
        me.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_409_means_another_replica_wrote_first() {
    let mem = Arc::new(Mem::default());
    let a = Replica::start("a", &mem);
    let b = Replica::start("b", &mem);
    // Both find no Lease and POST one; the second POST is a 409.
    tokio::time::sleep(RETRY * 2).await;
    assert_eq!(mem.conflicts(), 1);
    assert!(a.view.is_leader() ^ b.view.is_leader(), "exactly one leads");
    let (leader, follower) = if a.view.is_leader() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let leader_id = mem.spec().holder_identity.unwrap();
    assert_eq!(follower.view.status().holder, Some(leader_id.clone()));
    // Ten seconds of renewals: the follower never takes over, never two at once.
    let mut changes = leader.view.subscribe();
    let mut follower_rx = follower.view.subscribe();
    changes.borrow_and_update();
    follower_rx.borrow_and_update();
    let quiet = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            _ = changes.changed() => "the leader's",
            _ = follower_rx.changed() => "the follower's",
        }
    })
    .await;
    assert!(quiet.is_err(), "{} leadership changed", quiet.unwrap());
    assert_eq!(follower.memo.actions(), vec![]);
    assert_eq!(
        mem.conflicts(),
        1,
        "renewals of the leader's own version never conflict"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_renewal_conflicts_reads_again_and_keeps_or_loses_the_lease() {
    let mem = Arc::new(Mem::default());
    let me = Replica::start("me", &mem);
    me.until(true).await;
    // Someone edits the Lease without taking it (a label): the renewal's PUT is a 409, the
    // fresh read still names this replica, the renewal goes through on the new version.
    mem.overwrite(|l| {
        l.metadata.labels = Some([("team".to_string(), "kafka".to_string())].into());
    });
    let edited = mem.writes().len();
    tokio::time::sleep(RETRY * 2).await;
    assert_eq!(mem.conflicts(), 1);
    assert!(me.view.is_leader());
    assert!(mem.writes().len() > edited, "renewed after the conflict");
    assert_eq!(
        mem.lease().unwrap().metadata.labels.unwrap()["team"],
        "kafka"
    );
    // Someone takes it over by force: the next renewal conflicts, the read names them, and this
    // replica stops at once, without waiting for its deadline.
    mem.overwrite(|l| {
        l.spec.as_mut().unwrap().holder_identity = Some("usurper".into());
    });
    let forced = Instant::now();
    let down = me.until(false).await;
    assert!(
        down - forced <= RETRY,
        "stepped down {:?} after",
        down - forced
    );
    let (record, leading, _) = me.memo.last();
    assert_eq!((record.action, leading), (Action::LoseLeadership, false));
    assert_eq!(
        record.message,
        "stepped down from the Lease medic/medic-actuator: the Lease was overwritten: usurper holds it now; no broker action or re-evaluation starts here until it is acquired again"
    );
    assert_eq!(me.view.status().holder.as_deref(), Some("usurper"));
    me.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_released_lease_is_taken_over_at_once() {
    let mem = Arc::new(Mem::default());
    let a = Replica::start("a", &mem);
    a.until(true).await;
    let b = Replica::start("b", &mem);
    tokio::time::sleep(RETRY * 2).await;
    assert!(!b.view.is_leader());
    let released = Instant::now();
    let a_view = a.view.clone();
    let memo = a.stop().await;
    assert!(!a_view.is_leader());
    assert_eq!(
        memo.actions(),
        vec![
            (Action::AcquireLeadership, false),
            (Action::ReleaseLeadership, false),
        ]
    );
    let took = b.until(true).await - released;
    assert!(took <= RETRY, "took over {took:?} after the release");
    let spec = mem.spec();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    // What the release wrote: holder cleared, duration 1, the transitions kept.
    let writes = mem.writes();
    let release = writes
        .iter()
        .map(|(_, l)| l.spec.clone().unwrap())
        .find(|s| s.holder_identity.is_none())
        .expect("a write clearing the holder");
    assert_eq!(release.lease_duration_seconds, Some(1));
    assert_eq!(release.lease_transitions, Some(0));
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_acquisition_that_cannot_be_audited_is_given_back_and_not_acted_on() {
    let mem = Arc::new(Mem::default());
    let me = Replica::start("me", &mem);
    // Broken before the election's task first runs.
    me.memo.broken.store(true, Ordering::SeqCst);
    tokio::time::sleep(RETRY * 4).await;
    assert!(!me.view.is_leader(), "acted without an audit record");
    assert!(me.memo.failed_writes.load(Ordering::SeqCst) >= 2);
    // Each time, the Lease was freed again for another replica.
    assert_eq!(mem.spec().holder_identity, None);
    me.memo.broken.store(false, Ordering::SeqCst);
    me.until(true).await;
    assert_eq!(me.memo.actions(), vec![(Action::AcquireLeadership, false)]);
    me.stop().await;
}
