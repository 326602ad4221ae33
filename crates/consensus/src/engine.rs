//! One validator: buffered block broadcast, marshal (durable archives of finalized blocks and
//! certificates, backfill from peers, ordered delivery), marshal's `Inline` wrapper around the
//! node ([`Proposer`]), and simplex. Wired as commonware's `alto` chain does.
//!
//! Channels (any `commonware_p2p` sender and receiver: `simulated` in tests, `authenticated`
//! over real sockets): 0 votes, 1 certificates, 2 simplex's resolver, 3 block broadcast,
//! 4 marshal's backfill.

use crate::app::{Finalizer, Scheme};
use crate::block::ChainBlock;
use crate::evidence::{Attestations, Evidence, VerifierRng};
use commonware_broadcast::buffered;
use commonware_consensus::{
    marshal::{self, standard::Inline},
    simplex::{self, elector::RoundRobin},
    types::{Epoch, FixedEpocher, ViewDelta},
    Reporters,
};
use commonware_cryptography::{
    certificate::ConstantProvider,
    ed25519::PublicKey,
    sha256::{Digest, Sha256},
    Digestible,
};
use commonware_p2p::{Blocker, Provider, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::{buffer::paged::CacheRef, Clock, Handle, Metrics, Spawner, Storage};
use commonware_storage::archive::immutable;
use commonware_utils::{NZDuration, NZUsize, NZU64};
use rand_core_010::CryptoRng;
use std::{num::NonZeroUsize, time::Duration};

/// Single epoch covering all heights (epoch hand-off = new engine per epoch, see notes).
const EPOCH: Epoch = Epoch::zero();
const EPOCH_LENGTH: std::num::NonZeroU64 = NZU64!(u64::MAX);
const MAILBOX: NonZeroUsize = NZUsize!(1024);
const BUF: NonZeroUsize = NZUsize!(64 * 1024);

pub struct Config<B, P> {
    /// The height-0 block (the genesis state) every validator starts from.
    pub genesis: ChainBlock,
    pub me: PublicKey,
    /// ed25519 simplex scheme built from (namespace, ordered validator set, our key).
    pub scheme: Scheme,
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
    let epocher = FixedEpocher::new(EPOCH_LENGTH);
    let genesis = cfg.genesis.clone();
    let genesis_digest = genesis.digest();
    let (marshal_actor, marshal_mailbox, _floor) = marshal::core::Actor::init(
        context.child("marshal"),
        finalizations,
        blocks,
        marshal::Config {
            provider: ConstantProvider::new(cfg.scheme.clone()),
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
        cfg.scheme.clone(),
        VerifierRng::from_os(),
    )));

    // 5. Simplex. Its journal (`{prefix}-consensus`) records our own votes before they are sent,
    //    so a restarted validator replays it and never signs a conflicting vote.
    let reporter: Reporters<_, _> = (marshaled.clone(), evidence).into();
    let consensus = simplex::Engine::new(
        context.child("consensus"),
        simplex::Config {
            scheme: cfg.scheme,
            elector: RoundRobin::<Sha256>::default(),
            blocker: cfg.blocker,
            automaton: marshaled.clone(),
            relay: marshaled,
            reporter,
            strategy: Sequential,
            partition: format!("{prefix}-consensus"),
            mailbox_size: MAILBOX,
            epoch: EPOCH,
            floor: match cfg.floor {
                Some(f) => simplex::Floor::Finalized(f),
                None => simplex::Floor::Genesis(genesis_digest),
            },
            replay_buffer: BUF,
            write_buffer: BUF,
            page_cache,
            leader_timeout: cfg.leader_timeout,
            certification_timeout: cfg.leader_timeout * 2,
            timeout_retry: cfg.leader_timeout * 3,
            view_retention: ViewDelta::new(10),
            skip: simplex::SkipPolicy::Enabled {
                timeout: cfg.leader_timeout * 4,
                budget: simplex::SkipBudget::Participants,
            },
            fetch_timeout: NZDuration!(Duration::from_secs(1)),
            fetch_retry_delay: Duration::from_millis(100),
            forward: simplex::ForwardPolicy::Disabled,
            track_historical_votes: false,
        },
    );

    // Start order matters (alto): buffer and marshal before consensus so replayed consensus
    // events on restart have somewhere to go.
    Ok((
        vec![
            buffer.start(broadcast),
            marshal_actor.start(finalized, buffer_mailbox, backfill_resolver),
            consensus.start(votes, certs, resolver),
        ],
        marshal_mailbox,
    ))
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
