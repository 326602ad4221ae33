//! The capacity book: what the provider has promised, to its open bids and to its active
//! leases, out of what it has ([`Free`]). A bid reserves when it is sent and gives back when it
//! closes without a lease; a lease takes over its bid's reservation and gives it back when it
//! ends. Nothing is promised twice, so the bid engine never offers what a lease holds.
//!
//! Must not know: the chain, events or the runtime; the reactions tell it what happened.

use std::collections::BTreeMap;

use pazar_types::market::{BidId, OrderId};

use crate::bidding::{Demand, Free};

/// Capacity promised to open bids and active leases.
#[derive(Default)]
pub(super) struct Book {
    pub(super) free: Free,
    pub(super) bids: BTreeMap<OrderId, Demand>,
    pub(super) leases: BTreeMap<BidId, Demand>,
}

impl Book {
    pub(super) fn of(free: Free) -> Book {
        Book {
            free,
            ..Book::default()
        }
    }

    /// A bid on `order` holds `d`.
    pub(super) fn reserve(&mut self, order: OrderId, d: Demand) {
        self.free.take(&d);
        self.bids.insert(order, d);
    }

    /// The bid on `order` closed without a lease: its reservation goes back.
    pub(super) fn bid_ended(&mut self, order: &OrderId) {
        if let Some(d) = self.bids.remove(order) {
            self.free.give_back(&d);
        }
    }

    /// The bid became lease `id`, which keeps its reservation.
    pub(super) fn leased(&mut self, id: &BidId) {
        if let Some(d) = self.bids.remove(&id.order()) {
            self.leases.insert(id.clone(), d);
        }
    }

    /// A lease found running at restart holds `d`.
    pub(super) fn adopt_lease(&mut self, id: BidId, d: Demand) {
        self.free.take(&d);
        self.leases.insert(id, d);
    }

    /// Lease `id` ended: its reservation goes back.
    pub(super) fn lease_ended(&mut self, id: &BidId) {
        if let Some(d) = self.leases.remove(id) {
            self.free.give_back(&d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pazar_types::Address;

    fn bid(dseq: u64) -> BidId {
        BidId {
            owner: Address::Native([1; 20]),
            dseq,
            gseq: 1,
            oseq: 1,
            provider: Address::Native([9; 20]),
        }
    }

    fn cpu(millis: u64) -> Demand {
        Demand {
            cpu_millis: millis,
            ..Demand::default()
        }
    }

    #[test]
    fn a_closed_bid_gives_its_reservation_back_and_a_lease_keeps_it_until_it_ends() {
        let mut book = Book::of(Free {
            cpu_millis: 4_000,
            ..Free::default()
        });
        book.reserve(bid(1).order(), cpu(1_000));
        book.reserve(bid(2).order(), cpu(2_000));
        assert_eq!(book.free.cpu_millis, 1_000);
        book.bid_ended(&bid(1).order());
        assert_eq!(book.free.cpu_millis, 2_000, "the closed bid's reservation is back");
        book.leased(&bid(2));
        book.bid_ended(&bid(2).order());
        assert_eq!(book.free.cpu_millis, 2_000, "a bid that became a lease holds on");
        book.lease_ended(&bid(2));
        book.lease_ended(&bid(2));
        assert_eq!(book.free.cpu_millis, 4_000, "given back once, whatever repeats");
        assert!(book.bids.is_empty() && book.leases.is_empty());
    }
}
