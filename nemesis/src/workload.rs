//! The clients of a run, all in the hub namespace: writers through every validator (one
//! waiting for commits, one not, in batches), readers of transaction status (with their
//! inclusion proofs checked) and of blocks, and a poller of every validator's status that
//! also tells the nemesis who leads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ordo_client::api::{BlockId, TxResult, TxState, TxStatus, status::Role};
use ordo_client::{Client, ClientError, RetryPolicy, SubmitOptions, TxTemplate, Wire};
use ordo_crypto::Keypair;
use ordo_ledger::TxId;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::history::{Answer, Event, History, Place};
use crate::schedule::Rng;

/// How long a waiting writer waits for its commit.
const WAIT: Duration = Duration::from_secs(5);
/// How often each validator's status is polled.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// A status poll that takes longer has failed.
const POLL_TIMEOUT: Duration = Duration::from_millis(500);
/// A status answer older than this says nothing about who leads now.
const LEADER_FRESH: Duration = Duration::from_secs(1);

/// What the clients share.
pub struct Shared {
    history: History,
    template: Mutex<Option<TxTemplate>>,
    committed: Mutex<Vec<TxId>>,
    max_tip: AtomicU64,
    /// Per validator: when it last said it leads, and in which term.
    leads: Mutex<Vec<Option<(Duration, u64)>>>,
}

impl Shared {
    /// State for `n` validators' clients.
    pub fn new(history: History, n: usize) -> Arc<Shared> {
        Arc::new(Shared {
            history,
            template: Mutex::new(None),
            committed: Mutex::new(Vec::new()),
            max_tip: AtomicU64::new(0),
            leads: Mutex::new(vec![None; n]),
        })
    }

    /// The validator that most recently said it leads, in the highest term, within the
    /// last second.
    pub fn leader(&self) -> Option<usize> {
        let now = self.history.now();
        let leads = self.leads.lock().expect("lock");
        leads
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.map(|(at, term)| (i, at, term)))
            .filter(|(_, at, _)| now.saturating_sub(*at) < LEADER_FRESH)
            .max_by_key(|(_, at, term)| (*term, *at))
            .map(|(i, _, _)| i)
    }

    /// Highest tip seen on any validator.
    pub fn max_tip(&self) -> u64 {
        self.max_tip.load(Ordering::Relaxed)
    }

    fn template(&self) -> Option<TxTemplate> {
        self.template.lock().expect("lock").clone()
    }

    fn random_committed(&self, rng: &mut Rng) -> Option<TxId> {
        let c = self.committed.lock().expect("lock");
        (!c.is_empty()).then(|| c[rng.below(c.len() as u64) as usize])
    }
}

/// The clients of one validator's API.
#[derive(Clone)]
pub struct Endpoint {
    /// For submissions and reads (retried by the client's policy for up to 5 s).
    pub client: Client,
    /// For status polls (no retry, short timeout).
    pub poll: Client,
}

impl Endpoint {
    /// The clients of the API at `url`.
    ///
    /// # Errors
    /// A URL the client refuses.
    pub fn new(url: &str) -> anyhow::Result<Endpoint> {
        Ok(Endpoint {
            client: Client::builder(url)
                .retry(RetryPolicy::default().with_total(Duration::from_secs(5)))
                .request_timeout(Duration::from_secs(5))
                .build()?,
            poll: Client::builder(url)
                .retry(RetryPolicy::none())
                .request_timeout(POLL_TIMEOUT)
                .build()?,
        })
    }
}

/// The client keys a run needs for `validators` validators with `waiting` waiting writers
/// each: one per writer.
pub fn keys_needed(validators: usize, waiting: usize) -> usize {
    validators * (waiting + 1)
}

/// Starts every client task, with `waiting` writers waiting for commits per validator
/// (each with a key of its own, from `keys`); they run until `stop` turns true.
pub fn spawn(
    tasks: &mut JoinSet<()>,
    shared: &Arc<Shared>,
    endpoints: &[Endpoint],
    (keys, waiting): (&[Keypair], usize),
    seed: u64,
    stop: &watch::Receiver<bool>,
) {
    let n = endpoints.len();
    let per = waiting + 1;
    for (i, e) in endpoints.iter().enumerate() {
        tasks.spawn(poller(i, e.poll.clone(), shared.clone(), stop.clone()));
        for w in 0..waiting {
            let key = keys[(per * i + w) % keys.len()].clone();
            tasks.spawn(writer(
                i,
                e.client.clone(),
                key,
                true,
                shared.clone(),
                stop.clone(),
            ));
        }
        let batching = keys[(per * i + waiting) % keys.len()].clone();
        tasks.spawn(writer(
            i,
            e.client.clone(),
            batching,
            false,
            shared.clone(),
            stop.clone(),
        ));
    }
    let clients: Vec<Client> = endpoints.iter().map(|e| e.client.clone()).collect();
    tasks.spawn(reader(
        clients.clone(),
        Rng::new(seed ^ 0x5EED),
        shared.clone(),
        stop.clone(),
    ));
    tasks.spawn(block_reader(
        clients,
        Rng::new(seed ^ 0xB10C),
        shared.clone(),
        stop.clone(),
    ));
    debug_assert!(n > 0);
}

/// Whether `stop` has turned true.
fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

/// Polls validator `node`'s status: its tip, its term, whether it leads.
async fn poller(node: usize, client: Client, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    while !stopped(&stop) {
        if let Ok(status) = client.status().await {
            let at = shared.history.now();
            let leader = status.role == Role::Leader;
            shared.history.push(Event::Tip {
                at,
                node,
                height: status.tip.height,
                term: status.term,
                leader,
            });
            shared
                .max_tip
                .fetch_max(status.tip.height, Ordering::Relaxed);
            if leader {
                shared.leads.lock().expect("lock")[node] = Some((at, status.term));
            }
            // Transactions expire: sign against the furthest tip seen.
            let fresh = TxTemplate::from_status(&status);
            let mut t = shared.template.lock().expect("lock");
            if t.as_ref()
                .is_none_or(|old| old.expires_at < fresh.expires_at)
            {
                *t = Some(fresh);
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Submits through validator `node` until stopped: one transaction at a time waiting for
/// its commit, or batches of 1 to 4 without waiting.
async fn writer(
    node: usize,
    client: Client,
    key: Keypair,
    wait: bool,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let mut seq = 0u64;
    let mut rng = Rng::new(node as u64 * 2 + u64::from(wait));
    while !stopped(&stop) {
        let Some(template) = shared.template() else {
            tokio::time::sleep(POLL_EVERY).await;
            continue;
        };
        let count = if wait { 1 } else { 1 + rng.below(4) };
        let txs: Vec<_> = (0..count)
            .map(|_| {
                seq += 1;
                let payload = format!("nemesis v{node} {} {seq}", if wait { "w" } else { "b" });
                template.sign(&key, seq, payload.into_bytes())
            })
            .collect();
        let sent = shared.history.now();
        let answers: Vec<Answer> = if wait {
            match client.submit(&txs[0], &SubmitOptions::wait_for(WAIT)).await {
                Ok(r) => vec![answer_of(&r)],
                Err(e) => vec![answer_of_error(&e)],
            }
        } else {
            let opts = SubmitOptions {
                wait: None,
                wire: Wire::Binary,
            };
            match client.submit_batch(&txs, &opts).await {
                Ok(rs) => rs.iter().map(answer_of).collect(),
                Err(e) => vec![answer_of_error(&e); txs.len()],
            }
        };
        let ok = answers
            .iter()
            .all(|a| matches!(a, Answer::Committed(_) | Answer::Pending));
        let ids: Vec<TxId> = txs.iter().map(|t| t.id()).collect();
        {
            let mut c = shared.committed.lock().expect("lock");
            for (id, a) in ids.iter().zip(&answers) {
                if matches!(a, Answer::Committed(_)) {
                    c.push(*id);
                }
            }
        }
        shared.history.push(Event::Submit {
            sent,
            answered: shared.history.now(),
            node,
            wait,
            txs: ids.into_iter().zip(answers).collect(),
        });
        let pause = if ok { 20 } else { 100 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Reads the status of transactions acknowledged as committed, from random validators,
/// their inclusion proofs checked.
async fn reader(
    clients: Vec<Client>,
    mut rng: Rng,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    while !stopped(&stop) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Some(id) = shared.random_committed(&mut rng) else {
            continue;
        };
        let node = rng.below(clients.len() as u64) as usize;
        let answer = match clients[node].tx_status_checked(&id).await {
            Ok(TxStatus::Committed(c)) => Answer::Committed(Place {
                height: c.height,
                index: c.index,
                block_hash: c.block_hash,
            }),
            Ok(TxStatus::Pending { .. }) => Answer::Pending,
            Err(e) => answer_of_error(&e),
        };
        shared.history.push(Event::Read {
            at: shared.history.now(),
            node,
            id,
            answer,
        });
    }
}

/// Reads the hashes of random blocks from random validators.
async fn block_reader(
    clients: Vec<Client>,
    mut rng: Rng,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    while !stopped(&stop) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let tip = shared.max_tip();
        if tip == 0 {
            continue;
        }
        let height = 1 + rng.below(tip);
        let node = rng.below(clients.len() as u64) as usize;
        if let Ok(b) = clients[node].block(BlockId::Height(height), false).await {
            shared.history.push(Event::BlockRead {
                at: shared.history.now(),
                node,
                height: b.height,
                hash: b.hash,
            });
        }
    }
}

/// Submits a probe transaction with waiting through each validator in turn until one says
/// it committed, for at most `within`; where it committed.
pub async fn probe(endpoints: &[Endpoint], key: &Keypair, within: Duration) -> Option<Place> {
    let deadline = tokio::time::Instant::now() + within;
    let mut template = None;
    for e in endpoints.iter().cycle() {
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        template = TxTemplate::fetch(&e.poll).await.ok();
        if template.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tx = template?.sign(key, u64::MAX, b"nemesis probe".to_vec());
    for e in endpoints.iter().cycle() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        let wait = SubmitOptions::wait_for(left.min(WAIT));
        let attempt = tokio::time::timeout(left, e.client.submit(&tx, &wait)).await;
        if let Ok(Ok(r)) = &attempt
            && let Answer::Committed(p) = answer_of(r)
        {
            return Some(p);
        }
        if let Ok(Err(err)) = &attempt
            && err
                .code()
                .is_some_and(ordo_client::api::ErrorCode::is_already_held)
        {
            // Taken earlier: ask where it is.
            if let Ok(TxStatus::Committed(c)) = e.client.tx_status(&tx.id()).await {
                return Some(Place {
                    height: c.height,
                    index: c.index,
                    block_hash: c.block_hash,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn answer_of(r: &TxResult) -> Answer {
    if let Some(e) = &r.error {
        return Answer::Refused {
            code: format!("{:?}", e.code),
        };
    }
    match (r.status, r.height, r.index, r.block_hash) {
        (Some(TxState::Committed), Some(height), Some(index), Some(block_hash)) => {
            Answer::Committed(Place {
                height,
                index,
                block_hash,
            })
        }
        (Some(TxState::Pending), ..) => Answer::Pending,
        _ => Answer::Invalid {
            why: format!("an answer neither committed nor pending: {r:?}"),
        },
    }
}

fn answer_of_error(e: &ClientError) -> Answer {
    match e {
        ClientError::Api { error, .. } if error.code == ordo_client::api::ErrorCode::NotFound => {
            Answer::Unknown
        }
        ClientError::Api { error, .. } => Answer::Refused {
            code: format!("{:?}", error.code),
        },
        ClientError::Inclusion(_) | ClientError::Protocol { .. } | ClientError::Stream(_) => {
            Answer::Invalid { why: e.to_string() }
        }
        _ => Answer::Failed { why: e.to_string() },
    }
}
