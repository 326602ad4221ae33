//! Reactions to orders: consider each open order (new on the ledger, or open at restart), bid
//! on those the bid engine accepts at the price list's (or the pricing script's) price,
//! reserving the capacity in the book, and give a reservation back when its bid closes without
//! a lease. Every order not bid on is logged with the reason and counted by it.
//!
//! Must not know: the event stream (the follower calls these), how a lease runs, or the bid
//! engine's rules (`crate::bidding` decides; this file only acts on its answer).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use pazar_api::node::{BidPage, ListQuery, OrderPage};
use pazar_types::market::{BidId, GroupSpec, OrderId};
use pazar_types::{Coin, Dec, Msg, Price};

use super::{Daemon, DaemonError};
use crate::bidding::{self, Demand, ProviderView};

/// Longest the pricing script may run.
const PRICING_SCRIPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from the pricing script.
const PRICING_SCRIPT_OUTPUT: u64 = 1024;

/// What the pricing script reads on stdin.
#[derive(Serialize)]
struct PricingInput<'a> {
    order: &'a OrderId,
    group: &'a GroupSpec,
    demand: &'a Demand,
}

impl Daemon {
    /// The provider as bid matching sees it: its attributes and the audits of it (none when the
    /// node cannot say, so the matching rule refuses what needs them).
    async fn view(self: &Arc<Self>) -> ProviderView {
        let mut v = ProviderView {
            address: Some(self.address),
            ..ProviderView::default()
        };
        let me = self.address;
        if let Ok(p) = self.node(move |rpc| rpc.provider(&me, false)).await {
            v.attributes = p.item.provider.attributes;
            for a in p.item.audits {
                v.audits.insert(a.auditor, a.attributes);
            }
        }
        v
    }

    /// `order_created`: considers the new order.
    pub(super) async fn order_created(self: &Arc<Self>, id: &OrderId) {
        match self.order_group(id.clone()).await {
            Ok(Some(group)) => self.consider(id.clone(), group).await,
            Ok(None) => self.log(&format!("order {id} has no group on the node; not considered")),
            Err(e) => self.log(&format!("cannot read order {id}: {e}")),
        }
    }

    /// `bid_closed` of one of this provider's bids: its reservation goes back.
    pub(super) fn bid_closed(&self, id: &BidId) {
        if let Ok(mut b) = self.book.lock() {
            b.bid_ended(&id.order());
        }
    }

    /// Considers one open order: bids when it matches, logging why not otherwise.
    async fn consider(self: &Arc<Self>, order: OrderId, group: GroupSpec) {
        if self.book.lock().map(|b| b.bids.contains_key(&order)).unwrap_or(true) {
            return;
        }
        self.metrics.order_seen();
        let view = self.view().await;
        let decision = {
            let b = match self.book.lock() {
                Ok(b) => b,
                Err(_) => return,
            };
            match &self.cfg.pricing_script {
                None => bidding::evaluate(&group, &view, &b.free, &self.cfg.pricing).map(|(p, d)| (Some(p), d)),
                Some(_) => bidding::check_requirements(&group, &view)
                    .and_then(|()| bidding::reserve(&group, &b.free))
                    .map(|d| (None, d)),
            }
        };
        let (listed, demand) = match decision {
            Ok(x) => x,
            Err(why) => {
                self.metrics.bid_refused(why.reason());
                self.log(&format!("no bid on {order}: {why}"));
                return;
            }
        };
        let price = match (listed, &self.cfg.pricing_script) {
            (Some(p), _) => p,
            (None, None) => return,
            (None, Some(script)) => match self.script_price(script, &order, &group, &demand).await {
                Ok(p) => p,
                Err(why) => {
                    self.metrics.bid_refused("pricing_script");
                    self.log(&format!("no bid on {order}: {why}"));
                    return;
                }
            },
        };
        if let Ok(mut b) = self.book.lock() {
            b.reserve(order.clone(), demand);
        }
        let deposit = Coin::new(self.cfg.bid_deposit, price.denom.clone());
        match self
            .submit(vec![Msg::CreateBid {
                order: order.clone(),
                price: price.clone(),
                deposit,
            }])
            .await
        {
            Ok(_) => {
                self.metrics.bid_placed();
                self.log(&format!("bid {} {} per block on {order}", price.amount, price.denom));
            }
            Err(e) => {
                self.metrics.bid_failed();
                self.log(&format!("bid on {order} failed: {e}"));
                if let Ok(mut b) = self.book.lock() {
                    b.bid_ended(&order);
                }
            }
        }
    }

    /// The pricing script's price for the order, held to the order's ceiling.
    async fn script_price(
        &self,
        script: &Path,
        order: &OrderId,
        group: &GroupSpec,
        demand: &Demand,
    ) -> Result<Price, String> {
        let input = serde_json::to_vec(&PricingInput { order, group, demand }).map_err(|e| e.to_string())?;
        let script = script.to_path_buf();
        let amount = tokio::task::spawn_blocking(move || run_pricing_script(&script, input))
            .await
            .map_err(|e| e.to_string())??;
        let ceiling = group.max_price().ok_or("the order's prices overflow")?;
        if amount.is_zero() || amount > ceiling.amount {
            return Err(format!(
                "the pricing script asks {amount} {}; the order's ceiling is {}",
                ceiling.denom, ceiling.amount
            ));
        }
        Ok(Price {
            denom: ceiling.denom,
            amount,
        })
    }

    /// After a (re)start: open bids keep their reservation (every page read), then every open
    /// order is considered.
    pub(super) async fn restore_bids(self: &Arc<Self>) -> Result<(), DaemonError> {
        let q = ListQuery {
            provider: Some(self.address),
            state: Some("open".into()),
            limit: Some(self.cfg.list_page),
            ..ListQuery::default()
        };
        let bids = self.node(move |rpc| rpc.list_all::<BidPage>(&q)).await?;
        for b in bids {
            if let Ok(Some(spec)) = self.order_group(b.id.order()).await {
                if let Ok(mut book) = self.book.lock() {
                    if let Ok(d) = bidding::reserve(&spec, &book.free) {
                        book.reserve(b.id.order(), d);
                    }
                }
            }
        }
        let q = ListQuery {
            state: Some("open".into()),
            limit: Some(self.cfg.list_page),
            ..ListQuery::default()
        };
        let open = self.node(move |rpc| rpc.list_all::<OrderPage>(&q)).await?;
        for o in open {
            if let Some(group) = o.group {
                self.consider(o.id, group).await;
            }
        }
        Ok(())
    }
}

/// Runs the pricing script with `input` on stdin ([`PRICING_SCRIPT_TIMEOUT`] at most) and reads
/// a decimal price.
fn run_pricing_script(script: &Path, input: Vec<u8>) -> Result<Dec, String> {
    use std::io::{Read, Write};
    let mut child = std::process::Command::new(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run the pricing script {}: {e}", script.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // From a thread: a script that does not read its input must not block us.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let t0 = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if t0.elapsed() > PRICING_SCRIPT_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the pricing script ran longer than {} s",
                    PRICING_SCRIPT_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("pricing script: {e}")),
        }
    };
    let mut out = String::new();
    if let Some(o) = child.stdout.take() {
        let _ = o.take(PRICING_SCRIPT_OUTPUT).read_to_string(&mut out);
    }
    if !status.success() {
        return Err(format!("the pricing script declined ({status})"));
    }
    out.trim()
        .parse::<Dec>()
        .map_err(|_| format!("the pricing script printed {:?}, not a decimal price", out.trim()))
}
