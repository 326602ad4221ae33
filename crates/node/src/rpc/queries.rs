//! Queries of the committed state: blocks, parameters and supply, accounts, providers and the
//! market's objects, each read under the state's read lock; single objects with an optional
//! Merkle proof from the store at the same height, lists in pages with an opaque cursor.

use axum::extract::{Path, Query, State as AxState};
use axum::Json;
use serde::Deserialize;

use pazar_api::node::{
    AccountInfo, Audit, Balance, BidEntry, BidPage, BlockResponse, DeploymentDetail, DeploymentPage, EpochSet,
    EscrowDetail, GroupEntry, LeaseDetail, LeaseEntry, LeasePage, LeaseRef, ListQuery, OrderDetail, OrderEntry,
    OrderPage, ParamsResponse, Proven, ProviderDetail, ProviderEntry, ProviderPage, SupplyResponse, ValidatorEntry,
    ValidatorVote, ValidatorsResponse, DEFAULT_LIST, MAX_LIST,
};
use pazar_api::proof::{Proof, ProofsRequest, ProofsResponse};
use pazar_ledger::state::{store_key, table_id};
use pazar_ledger::State;
use pazar_types::market::{BidState, LeaseState, OrderState};
use pazar_types::records::Deployment;
use pazar_types::{Address, BidId, Coin, Denom, DeploymentId, GroupId, OrderId};

use super::errors::{json_body, parse, ApiError, ApiResult, Body, Q};
use super::Shared;
use crate::openapi::{
    AccountErrors, BidListParams, DeploymentListParams, ListErrors, LookupErrors, OrderListParams, ProofsErrors,
    ProviderListParams,
};
use crate::Node;

/// A committed block: its header, transaction hashes, receipts and end-of-block events.
#[utoipa::path(get, path = "/blocks/{height}", tag = "chain",
    params(("height" = String, Path, description = "A block height (from 1), or `latest`.")),
    responses((status = 200, body = BlockResponse), LookupErrors))]
pub(super) async fn block(AxState(node): AxState<Shared>, Path(height): Path<String>) -> ApiResult<BlockResponse> {
    let height = if height == "latest" {
        node.head().height
    } else {
        parse::<u64>("height", &height)?
    };
    let b = node
        .store()
        .block(height)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("block {height}")))?;
    let txs = b
        .block
        .txs
        .iter()
        .map(|t| hex::encode(pazar_types::tx_hash(t)))
        .collect();
    Ok(Json(BlockResponse {
        hash: b.block.header.hash(),
        header: b.block.header,
        txs,
        receipts: b.outcome.receipts,
        end_block_events: b.outcome.end_block_events,
        state_root_after: b.state_root,
    }))
}

/// The ledger's parameters (denominations, take rates, minimum fees and deposits, timeouts).
#[utoipa::path(get, path = "/params", tag = "chain", responses((status = 200, body = ParamsResponse)))]
pub(super) async fn params(AxState(node): AxState<Shared>) -> Json<ParamsResponse> {
    let st = node.state();
    Json(ParamsResponse {
        height: st.height,
        params: st.params.clone(),
    })
}

/// The validator sets of the current epoch and the fixed ones after it, each validator with its
/// recorded conduct, and the set changes voted on in this epoch.
#[utoipa::path(get, path = "/validators", tag = "chain", responses((status = 200, body = ValidatorsResponse)))]
pub(super) async fn validators(AxState(node): AxState<Shared>) -> Json<ValidatorsResponse> {
    let st = node.state();
    let epoch = st.epoch_of(st.height + 1);
    let sets = (epoch..)
        .map_while(|e| st.validator_set(e).map(|s| (e, s)))
        .map(|(e, set)| EpochSet {
            epoch: e,
            first_height: st.first_height_of(e).unwrap_or(u64::MAX),
            set_hash: pazar_ledger::validators::set_hash_of(set),
            validators: set
                .iter()
                .map(|m| {
                    let r = st.validator_record(&m.key).unwrap_or_default();
                    ValidatorEntry {
                        key: m.key,
                        account: Address::from_ed25519(&m.key),
                        power: m.power,
                        signed: r.signed,
                        missed: r.missed,
                        last_missed: r.last_missed,
                        double_signs: r.double_signs,
                    }
                })
                .collect(),
        })
        .collect();
    let needed = st
        .validator_set(epoch)
        .map_or(0, |s| pazar_ledger::validators::quorum(s.len()) as u32);
    let votes = st
        .validator_votes()
        .map(|((key, power), voters)| ValidatorVote {
            key: *key,
            power: *power,
            voters: voters.iter().map(hex::encode).collect(),
            needed,
        })
        .collect();
    Json(ValidatorsResponse {
        height: st.height,
        epoch_length: st.epoch_length(),
        epoch,
        sets,
        votes,
    })
}

/// The supply of each denomination.
#[utoipa::path(get, path = "/supply", tag = "bank", responses((status = 200, body = SupplyResponse)))]
pub(super) async fn supply(AxState(node): AxState<Shared>) -> Json<SupplyResponse> {
    let st = node.state();
    let supply = st
        .params
        .denoms()
        .iter()
        .map(|d| Coin::new(st.supply_of(d), (*d).clone()))
        .collect();
    Json(SupplyResponse {
        height: st.height,
        supply,
    })
}

/// `?prove=true` adds a Merkle proof of the answer's store entry.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProveQ {
    /// Add a Merkle proof of the object's store entry at the answer's height (verify it against
    /// the `state_root` of the header of block `height + 1`).
    #[serde(default)]
    pub(super) prove: bool,
}

/// `item` at the state's height, with the proof of `key` when asked; the caller holds the state
/// lock so the proof is about the same version as the value.
pub(super) fn proven<T>(node: &Node, st: &State, item: T, key: Vec<u8>, prove: bool) -> ApiResult<Proven<T>> {
    let proof = if prove {
        let p = node.store().prove(&key).map_err(ApiError::internal)?;
        if p.height != st.height {
            return Err(ApiError::internal("store and state disagree on the height"));
        }
        Some(Proof {
            height: p.height,
            state_root: p.root,
            key: p.key,
            value: p.value,
            proof: p.proof,
        })
    } else {
        None
    };
    Ok(Json(Proven {
        item,
        height: st.height,
        proof,
    }))
}

/// Proofs of several state entries (raw store keys, `pazar_types::state_key`) at one height:
/// what a client needs to carry records that refer to each other (a checkpoint's rounds, its
/// job, its dataset) as one proof against one header, e.g. in a model bundle. Absent entries
/// are proven absent.
#[utoipa::path(post, path = "/state/proofs", tag = "chain",
    request_body(content = ProofsRequest, content_type = "application/json"),
    responses((status = 200, description = "One proof per key, in order, all at `height`.", body = ProofsResponse),
        ProofsErrors))]
pub(super) async fn state_proofs(AxState(node): AxState<Shared>, body: Body) -> ApiResult<ProofsResponse> {
    let body = body?;
    // Checked before parsing: 32 MiB of `""` keys would be millions of vectors.
    if body.len() > pazar_api::proof::MAX_PROOFS_BODY_BYTES {
        return Err(ApiError::new(
            pazar_api::ErrorCode::TooLarge,
            format!(
                "a body of {} bytes; at most {} (256 keys of 512 bytes)",
                body.len(),
                pazar_api::proof::MAX_PROOFS_BODY_BYTES
            ),
        ));
    }
    let req: ProofsRequest = json_body(&body)?;
    req.validate().map_err(ApiError::bad)?;
    let n = node.clone();
    let r = tokio::task::spawn_blocking(move || {
        let st = n.state();
        let mut proofs = Vec::with_capacity(req.keys.len());
        for key in &req.keys {
            let p = n.store().prove(&key.0).map_err(ApiError::internal)?;
            if p.height != st.height {
                return Err(ApiError::internal("store and state disagree on the height"));
            }
            proofs.push(Proof {
                height: p.height,
                state_root: p.root,
                key: p.key,
                value: p.value,
                proof: p.proof,
            });
        }
        Ok(ProofsResponse {
            height: st.height,
            proofs,
        })
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(r))
}

/// An account's sequence and balances.
#[utoipa::path(get, path = "/accounts/{address}", tag = "bank",
    params(("address" = Address, Path), ProveQ),
    responses((status = 200, body = Proven<AccountInfo>), AccountErrors))]
pub(super) async fn account(
    AxState(node): AxState<Shared>,
    Path(address): Path<String>,
    q: Q<ProveQ>,
) -> ApiResult<Proven<AccountInfo>> {
    let Query(q) = q?;
    let a: Address = parse("address", &address)?;
    let st = node.state();
    let item = AccountInfo {
        address: a,
        sequence: st.account(&a).sequence,
        balances: st.balances_of(&a),
    };
    proven(&node, &st, item, store_key(table_id::ACCOUNTS, &a), q.prove)
}

/// One balance of an account.
#[utoipa::path(get, path = "/accounts/{address}/balances/{denom}", tag = "bank",
    params(("address" = Address, Path), ("denom" = Denom, Path), ProveQ),
    responses((status = 200, body = Proven<Balance>), AccountErrors))]
pub(super) async fn balance(
    AxState(node): AxState<Shared>,
    Path((address, denom)): Path<(String, String)>,
    q: Q<ProveQ>,
) -> ApiResult<Proven<Balance>> {
    let Query(q) = q?;
    let a: Address = parse("address", &address)?;
    let d: Denom = parse("denom", &denom)?;
    let st = node.state();
    let item = Balance {
        address: a,
        amount: st.balance(&a, &d),
        denom: d.clone(),
    };
    proven(&node, &st, item, store_key(table_id::BALANCES, &(a, d)), q.prove)
}

/// A page cursor: the hex of the store key (table id ‖ Borsh key) of the last item a page
/// returned. Opaque to clients; the table id keeps one list's cursor out of another list.
fn cursor_of<K: borsh::BorshSerialize>(table: u8, key: &K) -> String {
    hex::encode(store_key(table, key))
}

fn cursor_key<K: borsh::BorshDeserialize>(table: u8, s: &str) -> Result<K, ApiError> {
    let bad = || {
        ApiError::bad(format!(
            "invalid cursor {s:.80?}: pass the `next` of a previous page of this list"
        ))
    };
    // A key is an address and a few integers; anything longer is not a cursor.
    if s.len() > 512 {
        return Err(bad());
    }
    let bytes = hex::decode(s).map_err(|_| bad())?;
    match bytes.split_first() {
        Some((t, key)) if *t == table => borsh::from_slice(key).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// The filters of [`ListQuery`] one list reads, besides `limit` and `cursor`. A query that names
/// another is refused: a filter the list would ignore is a wrong answer, not a narrower one.
/// The OpenAPI document lists the same filters for each list (`crate::openapi`).
pub(crate) mod filters {
    pub const PROVIDERS: &[&str] = &[];
    pub const DEPLOYMENTS: &[&str] = &["owner"];
    pub const ORDERS: &[&str] = &["owner", "dseq", "state"];
    /// Bids and leases (a lease has its bid's id).
    pub const BIDS: &[&str] = &["owner", "provider", "dseq", "state"];
    /// Training jobs (`rpc::train`).
    pub const TRAIN_JOBS: &[&str] = &["owner", "state"];
}

/// The list query of `path`, refused when it names a filter outside `allowed`.
pub(super) fn list_query(q: Q<ListQuery>, path: &str, allowed: &[&str]) -> Result<ListQuery, ApiError> {
    let Query(q) = q?;
    let named = [
        ("owner", q.owner.is_some()),
        ("provider", q.provider.is_some()),
        ("dseq", q.dseq.is_some()),
        ("state", q.state.is_some()),
    ];
    for (name, set) in named {
        if set && !allowed.contains(&name) {
            let takes = if allowed.is_empty() {
                "no filter".to_string()
            } else {
                allowed.join(", ")
            };
            return Err(ApiError::bad(format!(
                "{path} has no `{name}` filter (it takes {takes}, limit and cursor)"
            )));
        }
    }
    Ok(q)
}

/// Whether a bid or lease id passes the owner, provider and dseq filters.
fn matches_bid(q: &ListQuery, id: &BidId) -> bool {
    q.owner.is_none_or(|o| id.owner == o)
        && q.provider.is_none_or(|p| id.provider == p)
        && q.dseq.is_none_or(|d| id.dseq == d)
}

/// One page of `items` (in key order, already filtered): those after the cursor, at most
/// `limit` of them (default [`DEFAULT_LIST`], at most [`MAX_LIST`]), each made by `show`,
/// and the cursor of the next page when any item remains (`None` only at the end, so a
/// list is never cut short silently). Keys are compared, not positions, so items added or
/// removed between pages never shift others in or out.
pub(super) fn page<'k, K, V, T>(
    q: &ListQuery,
    table: u8,
    items: impl Iterator<Item = (&'k K, V)>,
    show: impl Fn(&K, V) -> T,
) -> Result<(Vec<T>, Option<String>), ApiError>
where
    K: Ord + borsh::BorshSerialize + borsh::BorshDeserialize + 'k,
{
    let limit = q.limit.unwrap_or(DEFAULT_LIST);
    if limit == 0 {
        return Err(ApiError::bad(format!("limit must be 1 to {MAX_LIST}")));
    }
    let limit = limit.min(MAX_LIST);
    let after: Option<K> = q.cursor.as_deref().map(|c| cursor_key(table, c)).transpose()?;
    // The ledger's tables are ordered maps read whole, so the start is found by skipping;
    // a filtered list scans its table anyway.
    let mut rest = items.skip_while(|(k, _)| after.as_ref().is_some_and(|a| *k <= a));
    let mut out = Vec::new();
    let mut last = None;
    for (k, v) in rest.by_ref().take(limit) {
        out.push(show(k, v));
        last = Some(k);
    }
    let next = match (rest.next(), last) {
        (Some(_), Some(k)) => Some(cursor_of(table, k)),
        _ => None,
    };
    Ok((out, next))
}

/// The state filter of a list, parsed as the listed object's state.
pub(super) fn parse_state<T: for<'de> Deserialize<'de>>(s: &str) -> Result<T, ApiError> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| ApiError::bad(format!("unknown state {s:?}")))
}

/// Registered providers with their open bids and active leases.
#[utoipa::path(get, path = "/providers", tag = "providers", params(ProviderListParams),
    responses((status = 200, body = ProviderPage), ListErrors))]
pub(super) async fn providers(AxState(node): AxState<Shared>, q: Q<ListQuery>) -> ApiResult<ProviderPage> {
    let q = list_query(q, "/providers", filters::PROVIDERS)?;
    let st = node.state();
    let (providers, next) = page(&q, table_id::PROVIDERS, st.providers(), |a, p| ProviderEntry {
        owner: *a,
        provider: p.clone(),
        load: st.provider_load(a),
    })?;
    Ok(Json(ProviderPage {
        height: st.height,
        providers,
        next,
    }))
}

/// A provider, its load and the attributes each auditor signed for it.
#[utoipa::path(get, path = "/providers/{address}", tag = "providers",
    params(("address" = Address, Path), ProveQ),
    responses((status = 200, body = Proven<ProviderDetail>), LookupErrors))]
pub(super) async fn provider(
    AxState(node): AxState<Shared>,
    Path(address): Path<String>,
    q: Q<ProveQ>,
) -> ApiResult<Proven<ProviderDetail>> {
    let Query(q) = q?;
    let a: Address = parse("address", &address)?;
    let st = node.state();
    let p = st
        .provider(&a)
        .ok_or_else(|| ApiError::not_found(format!("provider {a}")))?;
    let item = ProviderDetail {
        owner: a,
        provider: p.clone(),
        load: st.provider_load(&a),
        audits: st
            .audits_of(&a)
            .map(|(auditor, attributes)| Audit {
                auditor: *auditor,
                attributes: attributes.clone(),
            })
            .collect(),
    };
    proven(&node, &st, item, store_key(table_id::PROVIDERS, &a), q.prove)
}

fn group_of(id: &OrderId) -> GroupId {
    GroupId {
        owner: id.owner,
        dseq: id.dseq,
        gseq: id.gseq,
    }
}

/// How long a block has taken lately: the mean over the last (up to) 100 committed blocks'
/// timestamps, else the node's configured block time. Only for showing runways as wall time;
/// nothing in the ledger reads it.
fn recent_block_ms(node: &Node) -> Option<u64> {
    const SPAN: u64 = 100;
    let head = node.head();
    let configured = u64::try_from(node.config.block_time.as_millis())
        .ok()
        .filter(|ms| *ms > 0);
    let from = head.height.saturating_sub(SPAN).max(1);
    if head.height <= from {
        return configured;
    }
    let Ok(Some(b)) = node.store().block(from) else {
        return configured;
    };
    let elapsed = head.time_ms.saturating_sub(b.block.header.time_ms);
    Some(elapsed / (head.height - from)).filter(|ms| *ms > 0).or(configured)
}

/// A deployment with its groups, leases and escrow at the state's height (`block_ms`: see
/// [`recent_block_ms`]).
fn deployment_detail(st: &State, id: &DeploymentId, d: &Deployment, block_ms: Option<u64>) -> DeploymentDetail {
    DeploymentDetail {
        id: id.clone(),
        deployment: d.clone(),
        groups: (1..=d.groups)
            .filter_map(|gseq| {
                st.group(&id.group(gseq)).map(|group| GroupEntry {
                    gseq,
                    group: group.clone(),
                })
            })
            .collect(),
        leases: st
            .leases_of_deployment(id)
            .map(|(lid, l)| LeaseRef {
                id: lid.clone(),
                lease: l.clone(),
            })
            .collect(),
        escrow: st.escrow_view(id, st.height).map(|v| v.with_block_time(block_ms)),
    }
}

/// Deployments, each with its groups, leases and escrow.
#[utoipa::path(get, path = "/deployments", tag = "market", params(DeploymentListParams),
    responses((status = 200, body = DeploymentPage), ListErrors))]
pub(super) async fn deployments(AxState(node): AxState<Shared>, q: Q<ListQuery>) -> ApiResult<DeploymentPage> {
    let q = list_query(q, "/deployments", filters::DEPLOYMENTS)?;
    let st = node.state();
    let block_ms = recent_block_ms(&node);
    let show = |id: &DeploymentId, d: &Deployment| deployment_detail(&st, id, d, block_ms);
    let (deployments, next) = match q.owner {
        Some(o) => page(&q, table_id::DEPLOYMENTS, st.deployments_of(&o), show)?,
        None => page(&q, table_id::DEPLOYMENTS, st.deployments(), show)?,
    };
    Ok(Json(DeploymentPage {
        height: st.height,
        deployments,
        next,
    }))
}

fn deployment_id(owner: &str, dseq: &str) -> Result<DeploymentId, ApiError> {
    Ok(DeploymentId {
        owner: parse("owner", owner)?,
        dseq: parse("dseq", dseq)?,
    })
}

/// A deployment with its groups, leases and escrow.
#[utoipa::path(get, path = "/deployments/{owner}/{dseq}", tag = "market",
    params(("owner" = Address, Path), ("dseq" = u64, Path), ProveQ),
    responses((status = 200, body = Proven<DeploymentDetail>), LookupErrors))]
pub(super) async fn deployment(
    AxState(node): AxState<Shared>,
    Path((owner, dseq)): Path<(String, String)>,
    q: Q<ProveQ>,
) -> ApiResult<Proven<DeploymentDetail>> {
    let Query(q) = q?;
    let id = deployment_id(&owner, &dseq)?;
    let st = node.state();
    let d = st
        .deployment(&id)
        .ok_or_else(|| ApiError::not_found(format!("deployment {id}")))?;
    let item = deployment_detail(&st, &id, d, recent_block_ms(&node));
    proven(&node, &st, item, store_key(table_id::DEPLOYMENTS, &id), q.prove)
}

/// A deployment's escrow account, as stored and settled up to the answer's height.
#[utoipa::path(get, path = "/escrow/{owner}/{dseq}", tag = "escrow",
    params(("owner" = Address, Path), ("dseq" = u64, Path), ProveQ),
    responses((status = 200, body = Proven<EscrowDetail>), LookupErrors))]
pub(super) async fn escrow(
    AxState(node): AxState<Shared>,
    Path((owner, dseq)): Path<(String, String)>,
    q: Q<ProveQ>,
) -> ApiResult<Proven<EscrowDetail>> {
    let Query(q) = q?;
    let id = deployment_id(&owner, &dseq)?;
    let st = node.state();
    let account = st
        .escrow_account(&id)
        .ok_or_else(|| ApiError::not_found(format!("escrow of deployment {id}")))?
        .clone();
    let item = EscrowDetail {
        view: st
            .escrow_view(&id, st.height)
            .map(|v| v.with_block_time(recent_block_ms(&node))),
        account,
        id: id.clone(),
    };
    proven(&node, &st, item, store_key(table_id::ESCROW, &id), q.prove)
}

/// Orders, each with the group spec it asks for.
#[utoipa::path(get, path = "/orders", tag = "market", params(OrderListParams),
    responses((status = 200, body = OrderPage), ListErrors))]
pub(super) async fn orders(AxState(node): AxState<Shared>, q: Q<ListQuery>) -> ApiResult<OrderPage> {
    let q = list_query(q, "/orders", filters::ORDERS)?;
    let want: Option<OrderState> = q.state.as_deref().map(parse_state).transpose()?;
    let st = node.state();
    let it = st.orders().filter(|(id, o)| {
        q.owner.is_none_or(|ow| id.owner == ow)
            && q.dseq.is_none_or(|d| id.dseq == d)
            && want.is_none_or(|w| o.state == w)
    });
    let (orders, next) = page(&q, table_id::ORDERS, it, |id, o| OrderEntry {
        id: id.clone(),
        order: o.clone(),
        group: st.group(&group_of(id)).map(|g| g.spec.clone()),
    })?;
    Ok(Json(OrderPage {
        height: st.height,
        orders,
        next,
    }))
}

/// An order, the group spec it asks for and its bids.
#[utoipa::path(get, path = "/orders/{owner}/{dseq}/{gseq}/{oseq}", tag = "market",
    params(("owner" = Address, Path), ("dseq" = u64, Path), ("gseq" = u32, Path), ("oseq" = u32, Path), ProveQ),
    responses((status = 200, body = Proven<OrderDetail>), LookupErrors))]
pub(super) async fn order(
    AxState(node): AxState<Shared>,
    Path((owner, dseq, gseq, oseq)): Path<(String, String, String, String)>,
    q: Q<ProveQ>,
) -> ApiResult<Proven<OrderDetail>> {
    let Query(q) = q?;
    let id = OrderId {
        owner: parse("owner", &owner)?,
        dseq: parse("dseq", &dseq)?,
        gseq: parse("gseq", &gseq)?,
        oseq: parse("oseq", &oseq)?,
    };
    let st = node.state();
    let o = st
        .order(&id)
        .ok_or_else(|| ApiError::not_found(format!("order {id}")))?;
    let item = OrderDetail {
        id: id.clone(),
        order: o.clone(),
        group: st.group(&group_of(&id)).map(|g| g.spec.clone()),
        bids: st
            .bids_for_order(&id)
            .map(|(bid, b)| BidEntry {
                id: bid.clone(),
                bid: b.clone(),
            })
            .collect(),
    };
    proven(&node, &st, item, store_key(table_id::ORDERS, &id), q.prove)
}

/// Bids.
#[utoipa::path(get, path = "/bids", tag = "market", params(BidListParams),
    responses((status = 200, body = BidPage), ListErrors))]
pub(super) async fn bids(AxState(node): AxState<Shared>, q: Q<ListQuery>) -> ApiResult<BidPage> {
    let q = list_query(q, "/bids", filters::BIDS)?;
    let want: Option<BidState> = q.state.as_deref().map(parse_state).transpose()?;
    let st = node.state();
    let it = st
        .bids()
        .filter(|(id, b)| matches_bid(&q, id) && want.is_none_or(|w| b.state == w));
    let (bids, next) = page(&q, table_id::BIDS, it, |id, b| BidEntry {
        id: id.clone(),
        bid: b.clone(),
    })?;
    Ok(Json(BidPage {
        height: st.height,
        bids,
        next,
    }))
}

fn bid_id(owner: &str, dseq: &str, gseq: &str, oseq: &str, provider: &str) -> Result<BidId, ApiError> {
    Ok(BidId {
        owner: parse("owner", owner)?,
        dseq: parse("dseq", dseq)?,
        gseq: parse("gseq", gseq)?,
        oseq: parse("oseq", oseq)?,
        provider: parse("provider", provider)?,
    })
}

/// One bid.
#[utoipa::path(get, path = "/bids/{owner}/{dseq}/{gseq}/{oseq}/{provider}", tag = "market",
    params(("owner" = Address, Path), ("dseq" = u64, Path), ("gseq" = u32, Path), ("oseq" = u32, Path),
        ("provider" = Address, Path), ProveQ),
    responses((status = 200, body = Proven<BidEntry>), LookupErrors))]
pub(super) async fn bid(
    AxState(node): AxState<Shared>,
    Path((owner, dseq, gseq, oseq, provider)): Path<(String, String, String, String, String)>,
    q: Q<ProveQ>,
) -> ApiResult<Proven<BidEntry>> {
    let Query(q) = q?;
    let id = bid_id(&owner, &dseq, &gseq, &oseq, &provider)?;
    let st = node.state();
    let b = st.bid(&id).ok_or_else(|| ApiError::not_found(format!("bid {id}")))?;
    let item = BidEntry {
        id: id.clone(),
        bid: b.clone(),
    };
    proven(&node, &st, item, store_key(table_id::BIDS, &id), q.prove)
}

/// Leases, each with what it has been paid.
#[utoipa::path(get, path = "/leases", tag = "market", params(BidListParams),
    responses((status = 200, body = LeasePage), ListErrors))]
pub(super) async fn leases(AxState(node): AxState<Shared>, q: Q<ListQuery>) -> ApiResult<LeasePage> {
    let q = list_query(q, "/leases", filters::BIDS)?;
    let want: Option<LeaseState> = q.state.as_deref().map(parse_state).transpose()?;
    let st = node.state();
    let it = st
        .leases()
        .filter(|(id, l)| matches_bid(&q, id) && want.is_none_or(|w| l.state == w));
    let (leases, next) = page(&q, table_id::LEASES, it, |id, l| LeaseEntry {
        id: id.clone(),
        lease: l.clone(),
        payment: st.payment(id).cloned(),
    })?;
    Ok(Json(LeasePage {
        height: st.height,
        leases,
        next,
    }))
}

/// A lease, its payment and its deployment's escrow.
#[utoipa::path(get, path = "/leases/{owner}/{dseq}/{gseq}/{oseq}/{provider}", tag = "market",
    params(("owner" = Address, Path), ("dseq" = u64, Path), ("gseq" = u32, Path), ("oseq" = u32, Path),
        ("provider" = Address, Path), ProveQ),
    responses((status = 200, body = Proven<LeaseDetail>), LookupErrors))]
pub(super) async fn lease(
    AxState(node): AxState<Shared>,
    Path((owner, dseq, gseq, oseq, provider)): Path<(String, String, String, String, String)>,
    q: Q<ProveQ>,
) -> ApiResult<Proven<LeaseDetail>> {
    let Query(q) = q?;
    let id = bid_id(&owner, &dseq, &gseq, &oseq, &provider)?;
    let st = node.state();
    let l = st
        .lease(&id)
        .ok_or_else(|| ApiError::not_found(format!("lease {id}")))?;
    let item = LeaseDetail {
        id: id.clone(),
        lease: l.clone(),
        payment: st.payment(&id).cloned(),
        escrow: st
            .escrow_view(&id.deployment(), st.height)
            .map(|v| v.with_block_time(recent_block_ms(&node))),
    };
    proven(&node, &st, item, store_key(table_id::LEASES, &id), q.prove)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_only_in_its_own_list() {
        let id = BidId {
            owner: Address::Native([1; 20]),
            dseq: 7,
            gseq: 1,
            oseq: 1,
            provider: Address::Native([2; 20]),
        };
        let c = cursor_of(table_id::LEASES, &id);
        assert_eq!(cursor_key::<BidId>(table_id::LEASES, &c).ok(), Some(id));
        assert!(
            cursor_key::<BidId>(table_id::BIDS, &c).is_err(),
            "another list's cursor"
        );
        for junk in ["", "zz", "0b", &"0b".repeat(300)] {
            assert!(cursor_key::<BidId>(table_id::LEASES, junk).is_err(), "{junk:?}");
        }
    }
}
