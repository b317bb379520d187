//! Peer-to-peer networking: libp2p, and nothing of it outside this module.
//!
//! Each validator's libp2p identity is its genesis ed25519 key, so the Noise handshake
//! authenticates it. After the handshake, a connection from any peer that is not a genesis
//! validator is refused (and counted) by an allow-list; connection counts are capped.
//! Peers are found by mDNS on a LAN and by dialling bootstrap addresses; identify shares
//! listen addresses. Requests and responses are [`Frame`]s on one request/response
//! protocol, bounded in size ([`FRAME_BYTES_MAX`]) and in time (`request_timeout`).
//!
//! The swarm runs in one task that owns it; the rest of the node talks to it through a
//! [`Network`] handle and receives [`InboundRequest`]s on a bounded channel.

mod codec;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::core::ConnectedPoint;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{ConnectionId, DialError, ListenError, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, allow_block_list, connection_limits, identify, identity, mdns, ping,
    request_response as rr,
};
use ordo_crypto::{Keypair, PublicKey};
use tokio::sync::{mpsc, oneshot};

pub use codec::{FrameCodec, PROTOCOL};
pub use ordo_wire::{FRAME_BYTES_MAX, Frame, Kind};

/// Most inbound requests queued for the node before new ones are refused.
pub const INBOUND_QUEUE_MAX: usize = 1024;
/// Most commands queued for the swarm task.
const COMMAND_QUEUE_MAX: usize = 1024;
/// Most concurrent streams per connection.
const STREAMS_PER_CONNECTION_MAX: usize = 256;
/// Most established connections per peer.
const CONNECTIONS_PER_PEER_MAX: u32 = 2;
/// How often the swarm re-dials bootstrap addresses while validators are missing: a fresh
/// dial after a partition heals connects at once, where a dial begun during it waits out
/// TCP's SYN back-off.
const REDIAL_INTERVAL: Duration = Duration::from_secs(1);
/// A dial (TCP, Noise, yamux) that takes longer has failed.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often each connection is pinged, and how long an answer may take.
const PING_INTERVAL: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// A connection without an answered ping for this long is closed, so a peer cut off by a
/// partition (whose TCP connection stays open, silently dropping everything) is dialled
/// afresh instead of waiting out TCP's retransmission back-off after the heal. libp2p's
/// own ping failure comes too late for that: the first is not reported, and the second
/// waits out a new stream's 10 s negotiation timeout.
const SILENCE_MAX: Duration = Duration::from_secs(3);
/// How often connections are checked for silence.
const SILENCE_CHECK: Duration = Duration::from_millis(250);

/// Network settings.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// Multiaddrs to listen on, e.g. `/ip4/0.0.0.0/tcp/7000`.
    pub listen: Vec<String>,
    /// Multiaddrs of peers to dial at start (and again while validators are missing).
    pub bootstrap: Vec<String>,
    /// Discover peers on the local network with mDNS.
    pub mdns: bool,
    /// Deadline for one request and its response.
    pub request_timeout: Duration,
}

/// Network failures.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A configured address is not a multiaddr.
    #[error("'{0}' is not a valid multiaddr (e.g. /ip4/127.0.0.1/tcp/7000)")]
    BadAddress(String),
    /// A genesis key cannot be a libp2p identity.
    #[error("validator key {0} is not a valid libp2p ed25519 key")]
    BadKey(PublicKey),
    /// The transport could not start.
    #[error("cannot start networking: {0}")]
    Start(String),
    /// The peer is not a validator of this chain.
    #[error("{0} is not a validator of this chain")]
    UnknownPeer(PublicKey),
    /// The request failed (unreachable, timed out, refused, closed).
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// The peer.
        peer: PublicKey,
        /// What went wrong.
        reason: String,
    },
    /// The network task has stopped.
    #[error("the network has stopped")]
    Stopped,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct NetworkStats {
    /// Connections refused because the peer is not a validator (or over the limits).
    pub refused_connections: AtomicU64,
    /// Inbound requests dropped because the node's queue was full.
    pub dropped_requests: AtomicU64,
    /// Connections closed because no ping was answered for [`SILENCE_MAX`].
    pub silent_connections: AtomicU64,
}

/// A request from a validator, waiting for the node's answer.
pub struct InboundRequest {
    /// The validator that sent it.
    pub from: PublicKey,
    /// The request.
    pub frame: Frame,
    reply: oneshot::Sender<Frame>,
}

impl InboundRequest {
    /// Sends the answer. Dropping the request instead makes the peer's request fail.
    pub fn respond(self, frame: Frame) {
        let _ = self.reply.send(frame);
    }
}

enum Command {
    Request {
        to: PeerId,
        frame: Frame,
        reply: oneshot::Sender<Result<Frame, String>>,
    },
    ListenAddrs(oneshot::Sender<Vec<String>>),
}

/// Handle on the running network.
#[derive(Clone)]
pub struct Network {
    commands: mpsc::Sender<Command>,
    peers: Arc<HashMap<PublicKey, PeerId>>,
    keys: Arc<HashMap<PeerId, PublicKey>>,
    stats: Arc<NetworkStats>,
    connected: Arc<ConnectedPeers>,
}

/// The validators with an established connection, kept by the swarm task as connections
/// open and close, so that reading them never waits on a busy swarm. `None` once the
/// network has stopped.
type ConnectedPeers = std::sync::RwLock<Option<Vec<PeerId>>>;

#[derive(NetworkBehaviour)]
struct Behaviour {
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    limits: connection_limits::Behaviour,
    rr: rr::Behaviour<FrameCodec>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

/// The libp2p peer id of a validator key.
///
/// # Errors
/// [`NetworkError::BadKey`] when the bytes are not an ed25519 point libp2p accepts.
pub fn peer_id(key: &PublicKey) -> Result<PeerId, NetworkError> {
    let pk = identity::ed25519::PublicKey::try_from_bytes(key.as_bytes())
        .map_err(|_| NetworkError::BadKey(*key))?;
    Ok(identity::PublicKey::from(pk).to_peer_id())
}

fn parse_addrs(addrs: &[String]) -> Result<Vec<Multiaddr>, NetworkError> {
    addrs
        .iter()
        .map(|a| a.parse().map_err(|_| NetworkError::BadAddress(a.clone())))
        .collect()
}

impl Network {
    /// Starts networking as `key` among `validators`. Returns the handle and the stream of
    /// inbound requests. The network stops when `shutdown` completes or every handle and
    /// the receiver are dropped.
    ///
    /// # Errors
    /// Bad addresses or keys, or a listener that cannot bind.
    ///
    /// # Panics
    /// When called outside a tokio runtime (the swarm task is spawned on it).
    pub fn start(
        key: &Keypair,
        validators: &[PublicKey],
        config: &NetworkConfig,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(Network, mpsc::Receiver<InboundRequest>), NetworkError> {
        let listen = parse_addrs(&config.listen)?;
        let bootstrap = parse_addrs(&config.bootstrap)?;
        let mut peers = HashMap::new();
        for v in validators {
            peers.insert(*v, peer_id(v)?);
        }
        let keys: HashMap<PeerId, PublicKey> = peers.iter().map(|(k, p)| (*p, *k)).collect();
        let mut swarm = build_swarm(key, config)?;
        let local = *swarm.local_peer_id();
        for p in keys.keys().filter(|p| **p != local) {
            swarm.behaviour_mut().allow.allow_peer(*p);
        }
        for addr in listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NetworkError::Start(format!("listen on {addr}: {e}")))?;
        }
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE_MAX);
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE_MAX);
        let stats = Arc::new(NetworkStats::default());
        let connected = Arc::new(ConnectedPeers::new(Some(Vec::new())));
        let task = SwarmTask {
            connected: connected.clone(),
            swarm,
            keys: keys.clone(),
            bootstrap,
            dialled: HashMap::new(),
            alive: HashMap::new(),
            checked: Instant::now(),
            inbound: inbound_tx,
            stats: stats.clone(),
            pending: HashMap::new(),
            replies: FuturesUnordered::new(),
        };
        crate::tasks::spawn(task.run(command_rx, shutdown));
        let network = Network {
            commands,
            peers: Arc::new(peers),
            keys: Arc::new(keys),
            stats,
            connected,
        };
        Ok((network, inbound_rx))
    }

    /// Sends `frame` to validator `to` and waits for its answer.
    ///
    /// # Errors
    /// [`NetworkError::UnknownPeer`], [`NetworkError::Request`] or [`NetworkError::Stopped`].
    pub async fn request(&self, to: &PublicKey, frame: Frame) -> Result<Frame, NetworkError> {
        let peer = *self.peers.get(to).ok_or(NetworkError::UnknownPeer(*to))?;
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Request {
                to: peer,
                frame,
                reply,
            })
            .await
            .map_err(|_| NetworkError::Stopped)?;
        let answer = rx.await.map_err(|_| NetworkError::Stopped)?;
        answer.map_err(|reason| NetworkError::Request { peer: *to, reason })
    }

    /// The addresses this node listens on (with the ports actually bound).
    ///
    /// # Errors
    /// [`NetworkError::Stopped`].
    pub async fn listen_addrs(&self) -> Result<Vec<String>, NetworkError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::ListenAddrs(tx))
            .await
            .map_err(|_| NetworkError::Stopped)?;
        rx.await.map_err(|_| NetworkError::Stopped)
    }

    /// The validators currently connected (as of the swarm's last connection event: this
    /// never waits on the swarm, however busy).
    ///
    /// # Errors
    /// [`NetworkError::Stopped`].
    pub fn connected(&self) -> Result<Vec<PublicKey>, NetworkError> {
        let peers = self.connected.read().expect("peer list lock poisoned");
        let peers = peers.as_ref().ok_or(NetworkError::Stopped)?;
        Ok(peers
            .iter()
            .filter_map(|p| self.keys.get(p).copied())
            .collect())
    }

    /// Counters.
    pub fn stats(&self) -> &NetworkStats {
        &self.stats
    }
}

/// `addr` without a trailing `/p2p/<peer id>`.
fn without_peer_id(addr: &Multiaddr) -> Multiaddr {
    let mut addr = addr.clone();
    if matches!(
        addr.iter().last(),
        Some(libp2p::multiaddr::Protocol::P2p(_))
    ) {
        addr.pop();
    }
    addr
}

fn build_swarm(key: &Keypair, config: &NetworkConfig) -> Result<Swarm<Behaviour>, NetworkError> {
    let identity = identity::Keypair::ed25519_from_bytes(key.secret_bytes())
        .map_err(|e| NetworkError::Start(format!("node key: {e}")))?;
    let local = identity.public().to_peer_id();
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(64))
        .with_max_established_incoming(Some(256))
        .with_max_established_per_peer(Some(CONNECTIONS_PER_PEER_MAX));
    let rr_config = rr::Config::default()
        .with_request_timeout(config.request_timeout)
        .with_max_concurrent_streams(STREAMS_PER_CONNECTION_MAX);
    let mdns = if config.mdns {
        let m = mdns::tokio::Behaviour::new(mdns::Config::default(), local)
            .map_err(|e| NetworkError::Start(format!("mdns: {e}")))?;
        Some(m)
    } else {
        None
    };
    let behaviour = Behaviour {
        allow: allow_block_list::Behaviour::default(),
        limits: connection_limits::Behaviour::new(limits),
        rr: rr::Behaviour::with_codec(
            FrameCodec,
            [(PROTOCOL, rr::ProtocolSupport::Full)],
            rr_config,
        ),
        identify: identify::Behaviour::new(identify::Config::new(
            PROTOCOL.to_string(),
            identity.public(),
        )),
        ping: ping::Behaviour::new(
            ping::Config::new()
                .with_interval(PING_INTERVAL)
                .with_timeout(PING_TIMEOUT),
        ),
        mdns: Toggle::from(mdns),
    };
    let swarm = libp2p::SwarmBuilder::with_existing_identity(identity)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .map_err(|e| NetworkError::Start(e.to_string()))?
        .with_behaviour(|_| behaviour)
        .map_err(|e| NetworkError::Start(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .with_connection_timeout(DIAL_TIMEOUT)
        .build();
    Ok(swarm)
}

type ReplyFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Option<(Frame, rr::ResponseChannel<Frame>)>> + Send>,
>;

struct SwarmTask {
    swarm: Swarm<Behaviour>,
    keys: HashMap<PeerId, PublicKey>,
    bootstrap: Vec<Multiaddr>,
    /// Established connections this node dialled, by address: not dialled again.
    dialled: HashMap<Multiaddr, usize>,
    /// Every open connection, with the last time it showed it was alive (opened, or a
    /// ping answered).
    alive: HashMap<ConnectionId, (PeerId, Instant)>,
    /// When connections were last checked for silence.
    checked: Instant,
    inbound: mpsc::Sender<InboundRequest>,
    stats: Arc<NetworkStats>,
    connected: Arc<ConnectedPeers>,
    pending: HashMap<rr::OutboundRequestId, oneshot::Sender<Result<Frame, String>>>,
    replies: FuturesUnordered<ReplyFuture>,
}

impl SwarmTask {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        self.dial_bootstrap();
        let mut redial = tokio::time::interval(REDIAL_INTERVAL);
        let mut silence = tokio::time::interval(SILENCE_CHECK);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_event(event),
                Some(Some((frame, channel))) = self.replies.next(), if !self.replies.is_empty() => {
                    let _ = self.swarm.behaviour_mut().rr.send_response(channel, frame);
                }
                _ = redial.tick() => self.redial_if_missing(),
                _ = silence.tick() => self.close_silent(),
            }
        }
        *self.connected.write().expect("peer list lock poisoned") = None;
        tracing::debug!("network stopped");
    }

    /// Publishes the connected validators (after a connection opened or closed).
    fn publish_connected(&self) {
        let peers = self.swarm.connected_peers().copied().collect();
        *self.connected.write().expect("peer list lock poisoned") = Some(peers);
    }

    fn dial_bootstrap(&mut self) {
        for addr in self.bootstrap.clone() {
            if self.dialled.contains_key(&without_peer_id(&addr)) {
                continue;
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "bootstrap dial failed");
            }
        }
    }

    /// Closes every connection without an answered ping for [`SILENCE_MAX`]; the
    /// redial replaces it once the peer answers again. After a gap in the checks (this
    /// process was stopped or starved), the silence was this node's own: every
    /// connection starts a fresh wait instead.
    fn close_silent(&mut self) {
        let now = Instant::now();
        let gap = now.saturating_duration_since(std::mem::replace(&mut self.checked, now));
        if gap > 4 * SILENCE_CHECK {
            for (_, at) in self.alive.values_mut() {
                *at = now;
            }
            return;
        }
        let silent: Vec<(ConnectionId, PeerId, Duration)> = self
            .alive
            .iter()
            .map(|(id, (peer, at))| (*id, *peer, now.saturating_duration_since(*at)))
            .filter(|(_, _, quiet)| *quiet >= SILENCE_MAX)
            .collect();
        for (id, peer, quiet) in silent {
            self.alive.remove(&id);
            self.stats
                .silent_connections
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, quiet_ms = quiet.as_millis(), "closing a connection that stopped answering pings");
            self.swarm.close_connection(id);
        }
    }

    fn redial_if_missing(&mut self) {
        let local = *self.swarm.local_peer_id();
        let connected: HashSet<PeerId> = self.swarm.connected_peers().copied().collect();
        let missing = self
            .keys
            .keys()
            .any(|p| *p != local && !connected.contains(p));
        if missing {
            self.dial_bootstrap();
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Request { to, frame, reply } => {
                let id = self.swarm.behaviour_mut().rr.send_request(&to, frame);
                self.pending.insert(id, reply);
            }
            Command::ListenAddrs(tx) => {
                let _ = tx.send(self.swarm.listeners().map(ToString::to_string).collect());
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Rr(e)) => self.on_rr(e),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                connection,
                result: Ok(_),
                ..
            })) => {
                if let Some((_, at)) = self.alive.get_mut(&connection) {
                    *at = Instant::now();
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if self.keys.contains_key(&peer) && peer != *self.swarm.local_peer_id() {
                        self.swarm.add_peer_address(peer, addr);
                        if !self.swarm.is_connected(&peer) {
                            let _ = self.swarm.dial(peer);
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if self.keys.contains_key(&peer_id) => {
                for addr in info.listen_addrs {
                    self.swarm.add_peer_address(peer_id, addr);
                }
            }
            SwarmEvent::IncomingConnectionError {
                error: ListenError::Denied { cause },
                send_back_addr,
                ..
            } => {
                self.stats
                    .refused_connections
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(addr = %send_back_addr, %cause, "refused an incoming connection (not a validator, or over the connection limits)");
            }
            SwarmEvent::OutgoingConnectionError {
                error: DialError::Denied { cause },
                peer_id,
                ..
            } => {
                self.stats
                    .refused_connections
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = ?peer_id, %cause, "refused an outgoing connection (not a validator, or over the connection limits)");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                self.alive.insert(connection_id, (peer_id, Instant::now()));
                if let ConnectedPoint::Dialer { address, .. } = endpoint {
                    *self.dialled.entry(without_peer_id(&address)).or_default() += 1;
                }
                self.publish_connected();
                tracing::debug!(%peer_id, "validator connected");
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                self.alive.remove(&connection_id);
                let address = match endpoint {
                    ConnectedPoint::Dialer { address, .. } => Some(without_peer_id(&address)),
                    ConnectedPoint::Listener { .. } => None,
                };
                if let Some(address) = address
                    && let Some(n) = self.dialled.get_mut(&address)
                {
                    *n -= 1;
                    if *n == 0 {
                        self.dialled.remove(&address);
                    }
                }
                self.publish_connected();
                tracing::debug!(%peer_id, "connection closed");
                self.redial_if_missing();
            }
            SwarmEvent::NewListenAddr { address, .. } => tracing::info!(%address, "listening"),
            _ => {}
        }
    }

    fn on_rr(&mut self, event: rr::Event<Frame, Frame>) {
        match event {
            rr::Event::Message {
                peer,
                message:
                    rr::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.on_request(peer, request, channel);
            }
            rr::Event::Message {
                message:
                    rr::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            rr::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            rr::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound request failed")
            }
            rr::Event::ResponseSent { .. } => {}
        }
    }

    fn on_request(&mut self, peer: PeerId, frame: Frame, channel: rr::ResponseChannel<Frame>) {
        // The allow-list admits only validators; this lookup cannot fail for a live connection.
        let Some(from) = self.keys.get(&peer).copied() else {
            return;
        };
        let (reply, rx) = oneshot::channel();
        if self
            .inbound
            .try_send(InboundRequest { from, frame, reply })
            .is_err()
        {
            self.stats.dropped_requests.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.replies.push(Box::pin(async move {
            rx.await.ok().map(|frame| (frame, channel))
        }));
    }
}

#[cfg(test)]
mod tests;
