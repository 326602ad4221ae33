//! One validator: buffered block broadcast, marshal (durable archives of finalized blocks and
//! certificates, backfill from peers, ordered delivery), marshal's `Inline` wrapper around the
//! node ([`Proposer`]), and simplex. Wired as commonware's `alto` chain does.
//!
//! Channels (any `commonware_p2p` sender and receiver: `simulated` in tests, `authenticated`
//! over real sockets): 0 votes, 1 certificates, 2 simplex's resolver, 3 block broadcast,
//! 4 marshal's backfill.
//!
//! Epochs (as commonware's `glue` orchestrator runs them): simplex runs one instance per epoch,
//! with that epoch's validator set from the ledger ([`Epochs`]), its own journal partition and
//! its own sub-channel of the vote, certificate and resolver channels (muxed by epoch number).
//! Marshal is one for all epochs and verifies each certificate with its epoch's set; its
//! `Inline` wrapper re-proposes an epoch's last block until that epoch finalizes it. Once the
//! node has committed the last block of the epoch, the next epoch's instance starts from it
//! (its genesis) and the old one stops. A validator not in an epoch's set follows it without
//! voting. Votes of a later epoch than this validator's tell it it is behind: it asks marshal
//! for the finalization of its epoch's last block from the peer that sent them.

use crate::app::{Finalizer, Scheme};
use crate::block::ChainBlock;
use crate::epochs::Epochs;
use crate::evidence::{Attestations, Evidence, VerifierRng};
use commonware_broadcast::buffered;
use commonware_consensus::{
    marshal::{self, standard::Inline},
    simplex::{self, elector::RoundRobin},
    types::{Epoch, Height, ViewDelta},
    Epochable, Reporters,
};
use commonware_cryptography::{
    ed25519::PublicKey,
    sha256::{Digest, Sha256},
    Digestible,
};
use commonware_p2p::{
    utils::mux::{Builder as _, Muxer},
    Blocker, Provider, Receiver, Sender,
};
use commonware_parallel::Sequential;
use commonware_runtime::{buffer::paged::CacheRef, Clock, Handle, Metrics, Spawner, Storage};
use commonware_storage::archive::immutable;
use commonware_utils::{vec::NonEmptyVec, NZDuration, NZUsize, NZU64};
use rand_core_010::CryptoRng;
use std::{num::NonZeroUsize, time::Duration};

const MAILBOX: NonZeroUsize = NZUsize!(1024);
const BUF: NonZeroUsize = NZUsize!(64 * 1024);

/// How often the orchestrator looks whether the node has committed its epoch's last block.
const EPOCH_POLL: Duration = Duration::from_millis(10);

pub struct Config<B, P> {
    /// The height-0 block (the genesis state) every validator starts from.
    pub genesis: ChainBlock,
    pub me: PublicKey,
    /// The validator set of each epoch (from the node's ledger) and this validator's key.
    pub epochs: Epochs,
    pub blocker: B,
    pub provider: P,
    /// Prefix of every storage partition (journal + archives) of this validator.
    pub partition_prefix: String,
    pub leader_timeout: Duration,
    /// Where this validator starts when it did not replay the chain from genesis: the
    /// finalization of the first block it executes (state sync restored the state below it).
    /// Marshal delivers blocks from this one on; simplex starts from its view.
    pub floor: Option<Finalization>,
}

/// A finalization certificate of this chain's blocks.
pub type Finalization = simplex::types::Finalization<Scheme, Digest>;

/// Marshal's mailbox: what a validator asks of its archives (finalizations by height).
pub type Marshal = marshal::core::Mailbox<Scheme, marshal::standard::Standard<ChainBlock>>;

pub type Channel<Snd, Rcv> = (Snd, Rcv);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A broken data directory: the validator cannot run without its archives.
    #[error("cannot open the {0} archive: {1}")]
    Archive(&'static str, String),
}

/// A validator's five channels: votes, certificates, simplex's resolver, block broadcast and
/// marshal's backfill.
pub type Channels<Snd, Rcv> = (
    Channel<Snd, Rcv>,
    Channel<Snd, Rcv>,
    Channel<Snd, Rcv>,
    Channel<Snd, Rcv>,
    Channel<Snd, Rcv>,
);

/// Builds and starts one validator on `context`. Everything it spawns is supervised by
/// `context`, so aborting the returned handle's task tree "crashes" the validator.
///
/// `app` is the node's [`Proposer`](crate::Proposer), or a wrapper around it (the networked engine paces
/// proposals to the configured block time).
#[allow(clippy::too_many_arguments)]
pub async fn start<E, A, B, P, Snd, Rcv>(
    context: E,
    cfg: Config<B, P>,
    app: A,
    finalized: Finalizer,
    evidence: Evidence,
    (votes, certs, resolver, broadcast, backfill): Channels<Snd, Rcv>,
) -> Result<(Vec<Handle<()>>, Marshal), EngineError>
where
    E: Clock + CryptoRng + Spawner + Storage + Metrics,
    A: commonware_consensus::Application<
        E,
        SigningScheme = Scheme,
        Context = simplex::types::Context<Digest, PublicKey>,
        Block = ChainBlock,
        Input = (),
    >,
    B: Blocker<PublicKey = PublicKey>,
    P: Provider<PublicKey = PublicKey>,
    Snd: Sender<PublicKey = PublicKey>,
    Rcv: Receiver<PublicKey = PublicKey>,
{
    let page_cache = CacheRef::new(commonware_runtime::buffer::paged::page_size(4096), NZUsize!(256));
    let prefix = cfg.partition_prefix.clone();

    // 1. Block dissemination: proposer broadcasts full blocks, peers buffer them by digest.
    let (buffer, buffer_mailbox) = buffered::Engine::new(
        context.child("buffer"),
        buffered::Config {
            public_key: cfg.me.clone(),
            mailbox_size: MAILBOX,
            deque_size: 10,
            priority: false,
            codec_config: (),
            peer_provider: cfg.provider.clone(),
            strategy: Sequential,
        },
    );

    // 2. Marshal's durable archives: finalization certificates and finalized blocks by height.
    use commonware_cryptography::certificate::Verifier as _;
    let finalizations = immutable::Archive::init(
        context.child("finalizations"),
        archive_cfg(
            &prefix,
            "finalizations",
            &page_cache,
            Scheme::certificate_codec_config_unbounded(),
        ),
    )
    .await
    .map_err(|e| EngineError::Archive("finalizations", e.to_string()))?;
    let blocks = immutable::Archive::init(context.child("blocks"), archive_cfg(&prefix, "blocks", &page_cache, ()))
        .await
        .map_err(|e| EngineError::Archive("blocks", e.to_string()))?;

    // 3. Marshal: orders finalized blocks, backfills gaps from peers, delivers to `finalized`.
    let epocher = cfg.epochs.epocher();
    let genesis = cfg.genesis.clone();
    let genesis_digest = genesis.digest();
    let (marshal_actor, marshal_mailbox, _floor) = marshal::core::Actor::init(
        context.child("marshal"),
        finalizations,
        blocks,
        marshal::Config {
            provider: cfg.epochs.clone(),
            epocher: epocher.clone(),
            start: match &cfg.floor {
                Some(f) => marshal::Start::Floor(f.clone()),
                None => {
                    marshal::Start::Genesis(commonware_cryptography::Digested::precomputed(genesis, genesis_digest))
                }
            },
            partition_prefix: prefix.clone(),
            mailbox_size: MAILBOX,
            view_retention: ViewDelta::new(100),
            prunable_items_per_section: NZU64!(64),
            page_cache: page_cache.clone(),
            replay_buffer: BUF,
            key_write_buffer: BUF,
            value_write_buffer: BUF,
            block_codec_config: (),
            max_repair: NZUsize!(16),
            max_pending_acks: NZUsize!(16),
            strategy: Sequential,
        },
    )
    .await;
    let backfill_resolver = marshal::resolver::p2p::init(
        context.child("backfill"),
        marshal::resolver::p2p::Config {
            public_key: cfg.me.clone(),
            peer_provider: cfg.provider.clone(),
            blocker: cfg.blocker.clone(),
            mailbox_size: MAILBOX,
            fetch_timeout: NZDuration!(Duration::from_secs(2)),
            fetch_retry_delay: Duration::from_millis(100),
            priority_requests: false,
            priority_responses: false,
        },
        backfill,
    );

    // 4. Inline wrapper: is simplex's Automaton + Relay + Reporter; calls our propose/verify.
    let marshaled = Inline::new(context.child("marshaled"), app, marshal_mailbox.clone(), epocher);

    // The node's proposals carry evidence from what simplex reports, and its verification
    // checks others' evidence, with this validator set and namespace.
    finalized.app().set_attestor(std::sync::Arc::new(Attestations::new(
        evidence.clone(),
        cfg.epochs.clone(),
        VerifierRng::from_os(),
    )));

    // 5. Simplex, one instance per epoch (see the module's documentation).
    let orchestrator = Orchestrator {
        app: finalized.app().clone(),
        epochs: cfg.epochs.clone(),
        marshaled,
        evidence,
        marshal: marshal_mailbox.clone(),
        blocker: cfg.blocker,
        prefix,
        page_cache,
        leader_timeout: cfg.leader_timeout,
        genesis: genesis_digest,
        floor: cfg.floor,
    };

    // Start order matters (alto): buffer and marshal before consensus so replayed consensus
    // events on restart have somewhere to go.
    let buffer = buffer.start(broadcast);
    let marshal = marshal_actor.start(finalized, buffer_mailbox, backfill_resolver);
    let consensus = context
        .child("orchestrator")
        .spawn(move |context| orchestrator.run(context, votes, certs, resolver));
    Ok((vec![buffer, marshal, consensus], marshal_mailbox))
}

/// Runs simplex for the epoch the node is in, and the next one once the node has committed the
/// epoch's last block.
struct Orchestrator<A, B> {
    app: std::sync::Arc<dyn pazar_node::consensus::Application>,
    epochs: Epochs,
    marshaled: A,
    evidence: Evidence,
    marshal: Marshal,
    blocker: B,
    prefix: String,
    page_cache: CacheRef,
    leader_timeout: Duration,
    genesis: Digest,
    floor: Option<Finalization>,
}

/// The epoch whose simplex instance runs, and its task.
struct Active {
    epoch: u64,
    handle: Handle<()>,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl<A, B> Orchestrator<A, B>
where
    A: commonware_consensus::CertifiableAutomaton<
            Context = simplex::types::Context<Digest, PublicKey>,
            Digest = Digest,
        > + commonware_consensus::Relay<Digest = Digest, PublicKey = PublicKey, Plan = simplex::Plan<PublicKey>>
        + commonware_consensus::Reporter<Activity = simplex::types::Activity<Scheme, Digest>>
        + Clone,
    B: Blocker<PublicKey = PublicKey>,
{
    async fn run<E, Snd, Rcv>(
        self,
        context: E,
        votes: Channel<Snd, Rcv>,
        certs: Channel<Snd, Rcv>,
        resolver: Channel<Snd, Rcv>,
    ) where
        E: Clock + CryptoRng + Spawner + Storage + Metrics,
        Snd: Sender<PublicKey = PublicKey>,
        Rcv: Receiver<PublicKey = PublicKey>,
    {
        let (mux, mut votes, mut vote_backup) = Muxer::builder(context.child("vote_mux"), votes.0, votes.1)
            .with_backup()
            .build();
        mux.start();
        let (mux, mut certs, mut cert_backup) = Muxer::builder(context.child("certificate_mux"), certs.0, certs.1)
            .with_backup()
            .build();
        mux.start();
        let (mux, mut resolver) = Muxer::new(context.child("resolver_mux"), resolver.0, resolver.1);
        mux.start();
        let app = self.app.clone();
        let mut active: Option<Active> = None;
        // The epoch last warned about, so a wait is logged once, not every poll.
        let mut warned = None;
        loop {
            // The epoch of the next block this node will commit.
            let want = self.epochs.epoch_of(app.parent().height + 1);
            if active.as_ref().map(|a| a.epoch) != Some(want) {
                match self.floor_of(want) {
                    Some(floor) => {
                        // The old instance stops (and frees its sub-channels) first.
                        drop(active.take());
                        // The schemes records of this epoch and its neighbours need, built
                        // here, where no node lock is held ([`Epochs::cached`]).
                        for e in want.saturating_sub(1)..=want.saturating_add(1) {
                            let _ = self.epochs.scheme(e);
                        }
                        let (Ok(v), Ok(c), Ok(r)) = (
                            votes.register(want).await,
                            certs.register(want).await,
                            resolver.register(want).await,
                        ) else {
                            tracing::error!(epoch = want, "the consensus channels closed");
                            return;
                        };
                        match self.start_epoch(&context, want, floor, v, c, r) {
                            Some(handle) => {
                                tracing::info!(epoch = want, "entered epoch");
                                active = Some(Active { epoch: want, handle });
                            }
                            None if warned != Some(want) => {
                                warned = Some(want);
                                tracing::warn!(epoch = want, "no validator set for the epoch yet");
                            }
                            None => {}
                        }
                    }
                    None if warned != Some(want) => {
                        warned = Some(want);
                        tracing::warn!(epoch = want, "the block that starts the epoch is not here yet");
                    }
                    None => {}
                }
            }
            let ours = active.as_ref().map_or(want, |a| a.epoch);
            tokio::select! {
                biased;
                m = vote_backup.recv() => match m {
                    Some((theirs, (from, _))) => self.behind(ours, theirs, from),
                    None => return,
                },
                m = cert_backup.recv() => match m {
                    Some((theirs, (from, _))) => self.behind(ours, theirs, from),
                    None => return,
                },
                _ = context.sleep(EPOCH_POLL) => {}
            }
        }
    }

    /// Where the instance of `epoch` starts: genesis for epoch 0; the last block of the epoch
    /// before (committed by this node); or the certificate state sync started this node from.
    fn floor_of(&self, epoch: u64) -> Option<simplex::Floor<Scheme, Digest>> {
        if epoch == 0 {
            return Some(simplex::Floor::Genesis(self.genesis));
        }
        let boundary = self.epochs.last_height(epoch - 1)?;
        if let Some(hash) = self.app.block_hash(boundary) {
            return Some(simplex::Floor::Genesis(Digest::from(hash)));
        }
        self.floor
            .as_ref()
            .filter(|f| f.epoch().get() == epoch)
            .map(|f| simplex::Floor::Finalized(f.clone()))
    }

    /// The simplex instance of `epoch`. Its journal (`{prefix}-consensus-{epoch}`) records our
    /// own votes before they are sent, so a restarted validator replays it and never signs a
    /// conflicting vote.
    #[allow(clippy::too_many_arguments)]
    fn start_epoch<E, S, R>(
        &self,
        context: &E,
        epoch: u64,
        floor: simplex::Floor<Scheme, Digest>,
        votes: (S, R),
        certs: (S, R),
        resolver: (S, R),
    ) -> Option<Handle<()>>
    where
        E: Clock + CryptoRng + Spawner + Storage + Metrics,
        S: Sender<PublicKey = PublicKey>,
        R: Receiver<PublicKey = PublicKey>,
    {
        let (scheme, _) = self.epochs.scheme(epoch)?;
        let reporter: Reporters<_, _> = (self.marshaled.clone(), self.evidence.clone()).into();
        let engine = simplex::Engine::new(
            context.child("consensus").with_attribute("epoch", epoch),
            simplex::Config {
                scheme: scheme.as_ref().clone(),
                elector: RoundRobin::<Sha256>::default(),
                blocker: self.blocker.clone(),
                automaton: self.marshaled.clone(),
                relay: self.marshaled.clone(),
                reporter,
                strategy: Sequential,
                partition: format!("{}-consensus-{epoch}", self.prefix),
                mailbox_size: MAILBOX,
                epoch: Epoch::new(epoch),
                floor,
                replay_buffer: BUF,
                write_buffer: BUF,
                page_cache: self.page_cache.clone(),
                leader_timeout: self.leader_timeout,
                certification_timeout: self.leader_timeout * 2,
                timeout_retry: self.leader_timeout * 3,
                view_retention: ViewDelta::new(10),
                skip: simplex::SkipPolicy::Enabled {
                    timeout: self.leader_timeout * 4,
                    budget: simplex::SkipBudget::Participants,
                },
                fetch_timeout: NZDuration!(Duration::from_secs(1)),
                fetch_retry_delay: Duration::from_millis(100),
                forward: simplex::ForwardPolicy::Disabled,
                track_historical_votes: false,
            },
        );
        Some(engine.start(votes, certs, resolver))
    }

    /// A peer sent votes of epoch `theirs`: if it is ahead of ours, this node lacks the last
    /// block of its epoch; ask marshal to fetch its finalization from that peer.
    fn behind(&self, ours: u64, theirs: u64, from: PublicKey) {
        if theirs <= ours {
            return;
        }
        if let Some(last) = self.epochs.last_height(ours) {
            self.marshal.hint_finalized(Height::new(last), NonEmptyVec::new(from));
        }
    }
}

/// Config of one immutable (never-pruned, on-disk-indexed) archive, as alto uses for validators.
fn archive_cfg<C>(prefix: &str, name: &str, page_cache: &CacheRef, codec_config: C) -> immutable::Config<C> {
    immutable::Config {
        metadata_partition: format!("{prefix}-{name}-metadata"),
        freezer_table_partition: format!("{prefix}-{name}-freezer-table"),
        freezer_table_initial_size: 64,
        freezer_table_resize_frequency: 4,
        freezer_table_resize_chunk_size: 16,
        freezer_key_partition: format!("{prefix}-{name}-freezer-key"),
        freezer_key_page_cache: page_cache.clone(),
        freezer_key_write_buffer: BUF,
        freezer_value_partition: format!("{prefix}-{name}-freezer-value"),
        freezer_value_target_size: 1 << 20,
        freezer_value_compression: None,
        freezer_value_write_buffer: BUF,
        ordinal_partition: format!("{prefix}-{name}-ordinal"),
        ordinal_write_buffer: BUF,
        items_per_section: NZU64!(1024),
        codec_config,
        replay_buffer: BUF,
    }
}
