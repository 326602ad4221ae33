//! A small chain driver for tests: signs transactions with real keys and applies real blocks.
#![allow(dead_code)]

use pazar_ledger::state::GenesisBalance;
use pazar_ledger::{invariants, BlockHeader, BlockOutcome, Genesis, Params, Receipt, State};
use pazar_types::market::{
    Endpoint, EndpointKind, Gpu, GroupSpec, PlacementRequirements, ResourceUnit, Resources, StorageVolume,
};
use pazar_types::{Address, Attribute, Coin, Dec, Denom, KeyScheme, Msg, ProviderInfo, SigningKey, TxBody};

pub const CHAIN: &str = "pazar-test-1";
pub const FEE: u128 = 100;

pub fn upzr() -> Denom {
    Denom::new("upzr").expect("valid")
}
pub fn uusd() -> Denom {
    Denom::new("uusd").expect("valid")
}
pub fn coin(amount: u128, denom: &Denom) -> Coin {
    Coin::new(amount, denom.clone())
}
pub fn dec(s: &str) -> Dec {
    s.parse().expect("valid decimal")
}

pub fn key(scheme: KeyScheme, n: u8) -> SigningKey {
    let mut secret = [n; 32];
    secret[0] = 1; // keep secp256k1 scalars in range
    SigningKey::from_secret(scheme, &secret).expect("valid secret")
}

pub struct Chain {
    pub state: State,
    pub blocks: Vec<(BlockHeader, Vec<Vec<u8>>)>,
    pub pending: Vec<Vec<u8>>,
    /// Next sequence per signer as the harness believes it.
    pub seqs: std::collections::BTreeMap<Address, u64>,
}

impl Chain {
    /// A chain where each key gets 1,000 tokens of both denominations.
    pub fn new(keys: &[&SigningKey]) -> Chain {
        Chain::with_params(keys, Params::devnet("upzr", "uusd"))
    }

    /// Like [`Chain::new`] with other parameters (e.g. short timeouts).
    pub fn with_params(keys: &[&SigningKey], params: Params) -> Chain {
        let balances = keys
            .iter()
            .map(|k| GenesisBalance {
                address: k.address(),
                coins: vec![coin(1_000_000_000, &upzr()), coin(1_000_000_000, &uusd())],
            })
            .collect();
        let genesis = Genesis {
            chain_id: CHAIN.into(),
            params,
            balances,
        };
        Chain {
            state: State::from_genesis(&genesis).expect("valid genesis"),
            blocks: Vec::new(),
            pending: Vec::new(),
            seqs: Default::default(),
        }
    }

    pub fn sign(&mut self, key: &SigningKey, msgs: Vec<Msg>) -> Vec<u8> {
        let seq = self.seqs.entry(key.address()).or_insert(0);
        let body = TxBody {
            chain_id: CHAIN.into(),
            sender: key.address(),
            sequence: *seq,
            fee: coin(FEE * msgs.len() as u128, &upzr()),
            msgs,
            memo: String::new(),
        };
        *seq += 1;
        body.sign(key).encode()
    }

    /// Applies a block of raw transactions and checks every invariant.
    pub fn block(&mut self, txs: Vec<Vec<u8>>) -> BlockOutcome {
        let header = BlockHeader {
            chain_id: CHAIN.into(),
            height: self.state.height + 1,
            time_ms: 0,
        };
        let out = self.state.apply_block(&header, &txs).expect("block accepted");
        self.blocks.push((header, txs));
        if let Err(e) = invariants::check(&self.state) {
            panic!("invariant broken at height {}: {e}", self.state.height);
        }
        out
    }

    /// Signs, submits alone in a block and returns the receipt.
    pub fn tx(&mut self, key: &SigningKey, msgs: Vec<Msg>) -> Receipt {
        let bytes = self.sign(key, msgs);
        let mut out = self.block(vec![bytes]);
        let r = out.receipts.remove(0);
        if r.fee.is_none() {
            // Refused before paying: the sequence was not used.
            *self.seqs.get_mut(&key.address()).expect("signed before") -= 1;
        }
        r
    }

    /// Like `tx` but panics with the log unless it succeeded.
    pub fn ok(&mut self, key: &SigningKey, msgs: Vec<Msg>) -> Receipt {
        let r = self.tx(key, msgs);
        assert!(r.is_ok(), "tx failed: {}/{} {}", r.codespace, r.code, r.log);
        r
    }

    /// Empty blocks until `height`.
    pub fn advance_to(&mut self, height: u64) -> Vec<pazar_types::Event> {
        let mut events = Vec::new();
        while self.state.height < height {
            events.extend(self.block(Vec::new()).end_block_events);
        }
        events
    }

    pub fn bal(&self, a: &SigningKey, d: &Denom) -> u128 {
        self.state.balance(&a.address(), d)
    }
}

pub fn expect_err(r: &Receipt, codespace: &str, code: u32) {
    assert_eq!(
        (r.codespace.as_str(), r.code),
        (codespace, code),
        "unexpected outcome: {}",
        r.log
    );
}

pub fn unit(cpu: u32, price: &str, denom: &Denom) -> ResourceUnit {
    ResourceUnit {
        id: 1,
        resources: Resources {
            cpu_millis: cpu,
            memory_bytes: 512 << 20,
            storage: vec![StorageVolume {
                name: "default".into(),
                bytes: 1 << 30,
                attributes: vec![],
            }],
            gpu: Gpu::default(),
            endpoints: vec![Endpoint {
                kind: EndpointKind::SharedHttp,
                sequence: 0,
            }],
        },
        count: 1,
        price: pazar_types::Price {
            denom: denom.clone(),
            amount: dec(price),
        },
    }
}

pub fn group(name: &str, price: &str, denom: &Denom) -> GroupSpec {
    GroupSpec {
        name: name.into(),
        requirements: PlacementRequirements::default(),
        resources: vec![unit(500, price, denom)],
    }
}

pub fn create_provider(attrs: Vec<Attribute>) -> Msg {
    Msg::CreateProvider {
        host_uri: "https://provider.example.com:8443".into(),
        tls_fingerprint: [7; 32],
        attributes: attrs,
        info: ProviderInfo {
            email: "ops@example.com".into(),
            website: String::new(),
        },
    }
}

pub fn create_deployment(dseq: u64, groups: Vec<GroupSpec>, deposit: Coin) -> Msg {
    Msg::CreateDeployment {
        dseq,
        version: [dseq as u8; 32],
        groups,
        deposit,
        auto_accept_after: None,
    }
}
