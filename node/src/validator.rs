//! The running validator: [`Validator::start`] opens the data directory, starts the
//! network, Raft and the API, and spawns the node's tasks; [`Validator::shutdown`] stops
//! them in order; [`Validator::failed`] says when consensus has stopped on its own.
//!
//! Tasks, each in the module named for its flow, all stopped by `shutdown`:
//! * **inbound** (`crate::inbound`): peer requests by kind.
//! * **proposer** (`crate::proposer`): cuts, builds and proposes blocks while leading.
//! * **applied** (`crate::applied`): follows the ledger tip; cleans the mempool, answers
//!   waiting clients, feeds the block streams.
//! * **precheck** and **announce** (`crate::precheck`): signatures checked ahead of their
//!   blocks (following), admitted transactions announced (leading).
//! * **resend** (`crate::resend`): re-sends what stays pending after a leader change.
//! * **api** (`crate::http`): the HTTP server.
//!
//! Every task runs in the validator's span (`validator = <name>`), so each log line says
//! which validator wrote it, also with several in one process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ordo_crypto::{Keypair, PublicKey};
use ordo_genesis::Genesis;
use ordo_ledger::{Policy, Store};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::clock::{Clock, TimeBound};
use crate::consensus::{
    self, BlockStateMachine, ConsensusError, LogStore, NoHandOver, OrdoRaft, RaftServer,
    RaftSettings, StatusWatch, StepAside, node_id, node_ids, open_consensus_storage,
    open_store_salvaging,
};
use crate::error::Fatal;
use crate::forward::FORWARD_CHECKS_MAX;
use crate::mempool::Mempool;
use crate::network::{InboundRequest, Network, NetworkConfig};
use crate::precheck::Prechecked;
use crate::proposer::task::Proposer;
use crate::shared::{Me, Parts, Shared};
use crate::sync::PeerBlockSource;
use ordo_config::NodeConfig;

/// How long shutdown waits for tasks to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often [`Validator::failed`] asks the ledger whether it met a damaged table file.
const SALVAGE_POLL: Duration = Duration::from_millis(500);
/// Deadline of one request to another validator.
const PEER_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the validator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The genesis file is missing or invalid.
    #[error(transparent)]
    Genesis(#[from] ordo_genesis::GenesisError),
    /// The key file cannot be used.
    #[error(transparent)]
    Key(#[from] ordo_crypto::KeyFileError),
    /// The key is not a validator of this chain.
    #[error("key {0} (from the key file) is not a validator in the genesis")]
    NotValidator(PublicKey),
    /// The data directory cannot be opened.
    #[error(transparent)]
    Store(#[from] ordo_ledger::StoreError),
    /// Networking could not start.
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    /// The API address cannot be bound.
    #[error("cannot listen for the HTTP API on {addr}: {source}")]
    Api {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The consensus state on disk cannot be read.
    #[error("cannot read the consensus state: {0}")]
    ConsensusState(std::io::Error),
    /// Consensus could not start.
    #[error("cannot start consensus: {0}")]
    Consensus(#[from] ConsensusError),
    /// The proposer's pipeline is as deep as the chain's certification lag or deeper.
    #[error(
        "raft.blocks_in_flight_max ({in_flight}) must be below the genesis's \
         consensus.certify_lag ({certify_lag}): blocks in flight cannot be certified yet"
    )]
    PipelineTooDeep {
        /// The node's `raft.blocks_in_flight_max`.
        in_flight: usize,
        /// The genesis's `certify_lag`.
        certify_lag: u64,
    },
    /// The ledger's latest blocks are damaged and no peer gave copies that verify.
    #[error(
        "the ledger's latest blocks are damaged and were not repaired within {wait:?}: {0}",
        wait = crate::heal::START_REPAIR_WAIT
    )]
    Damaged(#[from] crate::heal::RepairError),
}

/// A running validator.
pub struct Validator {
    shared: Arc<Shared>,
    api_addr: SocketAddr,
    span: tracing::Span,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// What [`Validator::start`] has set up before the tasks start.
struct Started {
    shared: Arc<Shared>,
    key: Keypair,
    server: RaftServer,
    inbound: mpsc::Receiver<InboundRequest>,
    tip_tx: watch::Sender<ordo_ledger::ChainTip>,
    announced: mpsc::Receiver<Vec<u8>>,
    others: Vec<PublicKey>,
    api: tokio::net::TcpListener,
    /// The peers blocks are fetched from, for repairs.
    source: Arc<PeerBlockSource>,
}

impl Validator {
    /// Starts a validator from `config`: opens the data directory, joins the network,
    /// starts Raft (initializing it on first start with the genesis validators) and serves
    /// the HTTP API.
    ///
    /// # Errors
    /// [`StartError`] naming what cannot be used.
    pub async fn start(config: &NodeConfig) -> Result<Validator, StartError> {
        let genesis = Genesis::load(&config.genesis)?;
        let certify_lag = genesis.consensus.certify_lag;
        if config.raft.blocks_in_flight_max as u64 >= certify_lag {
            return Err(StartError::PipelineTooDeep {
                in_flight: config.raft.blocks_in_flight_max,
                certify_lag,
            });
        }
        let key = ordo_crypto::load_key_file(&config.key_file)?;
        let me = genesis
            .validator(&key.public())
            .ok_or(StartError::NotValidator(key.public()))?;
        let span = tracing::info_span!("validator", name = %me.name);
        let (stop, stopping) = watch::channel(false);
        let started = assemble(config, genesis, key, stopping)
            .instrument(span.clone())
            .await?;
        let api_addr = started.api.local_addr().map_err(|source| StartError::Api {
            addr: config.api,
            source,
        })?;
        let shared = started.shared.clone();
        let tasks = spawn_tasks(started, config, &span);
        span.in_scope(|| {
            tracing::info!(
                key = %shared.me().public_key,
                api = %api_addr,
                chain = %shared.policy().chain_id,
                tip = shared.store().tip().height,
                verify_threads = ordo_crypto::batch_threads(),
                "validator started"
            );
        });
        Ok(Validator {
            shared,
            api_addr,
            span,
            stop,
            tasks,
        })
    }

    /// The bound address of the HTTP API.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// This validator's name in the genesis.
    pub fn name(&self) -> &str {
        &self.shared.me().name
    }

    /// Stops the node: the API stops accepting and answers the requests in progress
    /// (clients waiting for a commit hear where their transaction stands), the proposer and
    /// the other tasks stop, then Raft and the network, and the database is flushed. Every
    /// acknowledged commit is already durable; this only makes the exit tidy.
    pub async fn shutdown(self) {
        let span = self.span.clone();
        self.shutdown_inner().instrument(span).await;
    }

    async fn shutdown_inner(self) {
        tracing::info!("shutting down");
        self.hand_over().await;
        let _ = self.stop.send(true);
        self.shared.wake_proposer();
        let mut tasks = self.tasks;
        let finished =
            tokio::time::timeout(SHUTDOWN_GRACE, futures::future::join_all(tasks.iter_mut())).await;
        if finished.is_err() {
            tracing::warn!("tasks did not stop within {SHUTDOWN_GRACE:?}; aborting them");
            for task in &tasks {
                task.abort();
            }
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, self.shared.raft().shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "raft did not shut down cleanly"),
            Err(_) => tracing::warn!("raft did not shut down within {SHUTDOWN_GRACE:?}"),
        }
        if let Err(e) = self.shared.store().flush_all() {
            tracing::warn!(error = %e, "cannot flush the database");
        }
        tracing::info!("stopped");
    }

    /// Leading: hands the office to a caught-up follower before the node stops, and sends
    /// it what is pending here, so that clients see no election; the API serves meanwhile.
    async fn hand_over(&self) {
        let shared = &self.shared;
        let elected_within =
            Duration::from_millis(2 * shared.genesis().consensus.election_timeout_max_ms);
        let connected = |id: u64| {
            shared.validator(id).is_some_and(|(_, key)| {
                shared
                    .network()
                    .connected()
                    .is_ok_and(|peers| peers.contains(key))
            })
        };
        match crate::consensus::hand_over_to_stop(
            shared.raft(),
            shared.pace(),
            elected_within,
            connected,
        )
        .await
        {
            Ok(id) => {
                let to = shared
                    .validator(id)
                    .map_or_else(|| id.to_string(), |(name, _)| name.clone());
                tracing::info!(%to, "handed leadership to {to} before stopping");
                crate::resend::send_all_pending(shared).await;
            }
            Err(NoHandOver::NotLeading | NoHandOver::Alone) => {}
            // The follower it chose left first: it stops too, as when a whole devnet does.
            Err(NoHandOver::Gone(id)) => {
                let to = shared
                    .validator(id)
                    .map_or_else(|| id.to_string(), |(name, _)| name.clone());
                tracing::info!(%to, "stopping without handing leadership over: {to} left first");
            }
            Err(e) => tracing::warn!(error = %e, "stopping without handing leadership over"),
        }
    }

    /// Completes if Raft stops on its own (a fatal storage error), or when the ledger meets
    /// a damaged table file ([`Fatal::Salvage`], with the salvage requested on disk): the
    /// node can no longer order anything as it is and should exit, or restart.
    pub async fn failed(&self) -> Fatal {
        let mut watch = StatusWatch::new(self.shared.raft());
        let mut poll = tokio::time::interval(SALVAGE_POLL);
        loop {
            // A storage error that stopped Raft may be the damaged file itself.
            if let Some(why) = self.shared.store().salvage_wanted() {
                return match self.shared.store().request_salvage(&why) {
                    Ok(()) => Fatal::Salvage(why),
                    Err(e) => Fatal::Storage(format!("{why}; and {e}")),
                };
            }
            if let Some(fatal) = self.shared.raft_status().failure {
                return fatal;
            }
            tokio::select! {
                changed = watch.changed() => if !changed {
                    return self.shared.raft_status().failure.unwrap_or(Fatal::Stopped);
                },
                _ = poll.tick() => {}
            }
        }
    }
}

/// What a validator runs on before Raft starts: its API listener, its database, and its
/// network.
struct Base {
    api: tokio::net::TcpListener,
    policy: Arc<Policy>,
    store: Arc<Store>,
    /// Every validator's key, and the others'.
    keys: Vec<PublicKey>,
    others: Vec<PublicKey>,
    network: Network,
    inbound: mpsc::Receiver<InboundRequest>,
    /// What a salvage at open set aside, if one ran.
    salvaged: Option<ordo_ledger::Salvaged>,
    /// The start check of the latest blocks (`crate::heal::check_recent`).
    checked: ordo_ledger::Checked,
}

/// Binds the API, opens the data directory and joins the network.
async fn open_base(
    config: &NodeConfig,
    genesis: &Genesis,
    key: &Keypair,
    stopping: watch::Receiver<bool>,
) -> Result<Base, StartError> {
    let api = tokio::net::TcpListener::bind(config.api)
        .await
        .map_err(|source| StartError::Api {
            addr: config.api,
            source,
        })?;
    let policy = Arc::new(genesis.policy());
    // Process-wide: validators started in one process (tests) share the last setting.
    ordo_crypto::set_batch_threads(config.verify.threads());
    let open = || {
        open_store_salvaging(
            &config.data_dir,
            &genesis.identity(),
            &config.storage.tuning(),
        )
    };
    let (mut store, mut salvaged) = open()?;
    // A damaged table file among the latest blocks is set aside now, before anything
    // reads from it; older ones are found by the scrub (and set aside at the next start).
    let mut checked = crate::heal::check_recent(&store, &policy).await;
    if checked.table_damage && salvaged.is_none() {
        let why = checked
            .damage
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        store.request_salvage(&why)?;
        drop(store);
        (store, salvaged) = open()?;
        checked = crate::heal::check_recent(&store, &policy).await;
    }
    if let Some(s) = &salvaged {
        tracing::warn!(
            reason = %s.reason,
            files = ?s.files,
            lost_blocks = ?s.lost_blocks,
            reindexed_blocks = s.reindexed_blocks,
            meta_rewritten = s.meta_rewritten,
            "salvaged the ledger: damaged table files set aside in ledger/lost; their blocks come from the peers"
        );
    }
    let keys: Vec<PublicKey> = genesis.validators.iter().map(|v| v.public_key).collect();
    let others: Vec<PublicKey> = keys
        .iter()
        .copied()
        .filter(|k| *k != key.public())
        .collect();
    let (network, inbound) = Network::start(
        key,
        &keys,
        &network_config(config, genesis, key),
        stopped(stopping),
    )?;
    Ok(Base {
        api,
        policy,
        store,
        keys,
        others,
        network,
        inbound,
        salvaged,
        checked,
    })
}

/// Opens storage, the network and Raft, and makes the shared state.
async fn assemble(
    config: &NodeConfig,
    genesis: Genesis,
    key: Keypair,
    stopping: watch::Receiver<bool>,
) -> Result<Started, StartError> {
    let mut base = open_base(config, &genesis, &key, stopping.clone()).await?;
    let (policy, store) = (base.policy.clone(), base.store.clone());
    let source = Arc::new(PeerBlockSource::new(
        base.network.clone(),
        base.others.clone(),
    ));
    let checked = std::mem::take(&mut base.checked);
    let later =
        crate::heal::check_at_start(&store, &policy, &source, (checked, base.salvaged.as_ref()))
            .await?;
    let (log, sm) = open_consensus_storage(store.clone(), policy.clone(), source.clone())
        .map_err(StartError::ConsensusState)?;
    let (recent, timings, pace) = (sm.recent(), log.timings(), log.pace());
    let raft = start_raft(config, &genesis, &key, &base, log.clone(), sm).await?;
    let (tip_tx, tip) = watch::channel(store.tip());
    let (prechecked, announced) = Prechecked::new(policy.limits.tx_bytes_max, &base.others);
    let clock = Arc::new(Clock::new());
    let server = RaftServer::new(
        raft.clone(),
        (log, store.clone()),
        policy.clone(),
        prechecked.clone(),
        TimeBound::new(clock.clone(), genesis.consensus.block_time_ahead_max_ms),
        config.raft.depose_after_failed_appends,
    );
    let name = genesis
        .validator(&key.public())
        .ok_or(StartError::NotValidator(key.public()))?
        .name
        .clone();
    let (policy_for_attest, store_for_attest) = (policy.clone(), store.clone());
    let parts = Parts {
        me: Me {
            name,
            public_key: key.public(),
            node_id: node_id(&key.public()),
        },
        mempool: Mempool::new(policy.clone(), config.mempool.limits()),
        pool_limit: config.mempool.txs_max,
        genesis,
        policy,
        store,
        raft,
        network: base.network,
        tip,
        recent,
        timings,
        pace,
        clock,
        prechecked,
        attestations: crate::certify::Collected::load(policy_for_attest, store_for_attest)?,
        stopping,
    };
    let shared = Arc::new(Shared::new(parts, FORWARD_CHECKS_MAX));
    shared.storage().report(later);
    Ok(Started {
        shared,
        key,
        server,
        inbound: base.inbound,
        tip_tx,
        announced,
        others: base.others,
        api: base.api,
        source,
    })
}

/// The network settings: the node's own, and every other validator's genesis addresses
/// to dial.
fn network_config(config: &NodeConfig, genesis: &Genesis, key: &Keypair) -> NetworkConfig {
    let mut bootstrap = config.bootstrap.clone();
    for v in genesis
        .validators
        .iter()
        .filter(|v| v.public_key != key.public())
    {
        bootstrap.extend(v.addresses.iter().cloned());
    }
    NetworkConfig {
        listen: config.listen.clone(),
        bootstrap,
        mdns: config.mdns,
        request_timeout: PEER_REQUEST_TIMEOUT,
    }
}

/// Starts Raft with the genesis timing and the node's compaction settings, and forms the
/// cluster from the genesis validators on first start.
async fn start_raft(
    config: &NodeConfig,
    genesis: &Genesis,
    key: &Keypair,
    base: &Base,
    log: LogStore,
    sm: BlockStateMachine,
) -> Result<OrdoRaft, StartError> {
    let c = &genesis.consensus;
    let settings = RaftSettings {
        heartbeat_ms: c.heartbeat_interval_ms,
        election_min_ms: c.election_timeout_min_ms,
        election_max_ms: c.election_timeout_max_ms,
        snapshot_every: config.raft.snapshot_every_blocks,
        keep: config.raft.keep_blocks,
    };
    let raft = consensus::start(
        node_id(&key.public()),
        &genesis.chain_id,
        settings,
        base.network.clone(),
        log,
        sm,
    )
    .await?;
    consensus::initialize(&raft, &node_ids(base.keys.iter().copied())?).await?;
    Ok(raft)
}

/// Spawns every task of the node, each in `span`.
fn spawn_tasks(s: Started, config: &NodeConfig, span: &tracing::Span) -> Vec<JoinHandle<()>> {
    let shared = s.shared;
    let spawn = |task: BoxFuture<'static, ()>| tokio::spawn(task.instrument(span.clone()));
    let attester = crate::attest::attest(shared.clone(), s.key.clone());
    let proposer = Proposer::new(
        shared.clone(),
        s.key,
        config.raft.blocks_in_flight_max,
        Duration::from_millis(config.raft.idle_batch_wait_ms),
    );
    let prechecked = shared.prechecked().clone();
    let mut tasks = vec![
        spawn(Box::pin(crate::inbound::serve_inbound(
            shared.clone(),
            s.server,
            s.inbound,
        ))),
        spawn(Box::pin(proposer.run())),
        spawn(Box::pin(attester)),
        spawn(Box::pin(crate::applied::follow_applied(
            shared.clone(),
            s.tip_tx,
        ))),
        spawn(Box::pin(crate::resend::resend_stale(shared.clone()))),
        spawn(Box::pin(
            prechecked.clone().run(s.announced, shared.stopping_watch()),
        )),
        spawn(Box::pin(crate::http::serve(shared.clone(), s.api))),
        spawn(Box::pin(crate::heal::repair_reported(
            shared.store().clone(),
            shared.policy().clone(),
            s.source,
            shared.storage().clone(),
            stopped(shared.stopping_watch()),
        ))),
        spawn(Box::pin(crate::heal::scrub(
            shared.store().clone(),
            shared.policy().clone(),
            shared.storage().clone(),
            (
                config.storage.scrub_kib_per_s,
                Duration::from_secs(config.storage.scrub_every_s),
            ),
            stopped(shared.stopping_watch()),
        ))),
    ];
    if config.raft.step_aside_when_slow {
        let c = &shared.genesis().consensus;
        let rule = StepAside::for_election_max(Duration::from_millis(c.election_timeout_max_ms));
        let names = shared
            .genesis()
            .validators
            .iter()
            .map(|v| (node_id(&v.public_key), v.name.clone()))
            .collect();
        tasks.push(spawn(Box::pin(crate::consensus::step_aside(
            shared.raft().clone(),
            shared.pace().clone(),
            (rule, names),
            stopped(shared.stopping_watch()),
        ))));
    }
    tasks.push(spawn(Box::pin(crate::clock::probe(
        shared.network().clone(),
        s.others.clone(),
        shared.clock().clone(),
        stopped(shared.stopping_watch()),
    ))));
    for follower in s.others {
        let peer = shared
            .genesis()
            .validator(&follower)
            .map_or_else(|| follower.to_string(), |v| v.name.clone());
        let send = prechecked.clone().send_announcements(
            follower,
            shared.network().clone(),
            shared.stopping_watch(),
        );
        let peer_span = tracing::info_span!(parent: span, "announce", peer = %peer);
        tasks.push(tokio::spawn(send.instrument(peer_span)));
    }
    tasks
}

/// Completes once `stopping` turns true (or its sender is gone).
fn stopped(mut stopping: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let _ = stopping.wait_for(|s| *s).await;
    })
}
