//! The wire forms and settings of one validator, through the crate's public API: the block
//! codec (`block.rs`), the gossip batch codec (`gossip/batch.rs`) and what `Simplex::new`
//! accepts as peers (`net.rs`). (Integration tests rather than unit tests: the library's own
//! test build would compile its engine a second time, a few minutes on a 2-core CI machine.)

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use commonware_codec::{Copying, DecodeExt, Encode, EncodeSize, Write};
use commonware_cryptography::ed25519::PrivateKey;
use commonware_cryptography::sha256::Digest;
use commonware_cryptography::{Digestible, Signer};
use zeroize::Zeroizing;

use pazar_consensus::block::MAX_ENCODED_BLOCK;
use pazar_consensus::gossip::{Batch, BatchError, MAX_BATCH_BYTES, MAX_BATCH_TXS, MAX_MESSAGE};
use pazar_consensus::sync::MarshalCertificates;
use pazar_consensus::{ChainBlock, NetError, Peer, Settings, Simplex};
use pazar_node::genesis::ConsensusKey;
use pazar_types::block::{txs_root, Evidence};
use pazar_types::tx::MAX_TX_BYTES;
use pazar_types::{Address, Block, Header};

/// The block codec.
mod block {
    use super::*;

    fn block(txs: Vec<Vec<u8>>) -> Block {
        Block {
            header: Header {
                chain_id: "c".into(),
                height: 3,
                time_ms: 9,
                parent: [1; 32],
                state_root: [2; 32],
                txs_root: txs_root(&txs),
                proposer: Address::module("p"),
            },
            txs,
            evidence: Evidence::default(),
        }
    }

    #[test]
    fn a_block_round_trips_and_is_addressed_by_its_header_hash() {
        let b = ChainBlock::new(block(vec![vec![7; 10], vec![8; 3]]));
        let bytes = b.encode();
        assert_eq!(bytes.len(), b.encode_size());
        let back = ChainBlock::decode(bytes).expect("decodes");
        assert_eq!(back, b);
        assert_eq!(back.digest(), Digest::from(b.block().header.hash()));
        assert_eq!(commonware_consensus::Block::parent(&back), Digest::from([1; 32]));
        assert_eq!(ChainBlock::genesis("c", 1, [5; 32]).digest(), Digest::from([0u8; 32]));
    }

    #[test]
    fn truncated_oversized_or_trailing_bytes_are_refused() {
        let bytes = ChainBlock::new(block(vec![vec![7; 10]])).encode().to_vec();
        assert!(ChainBlock::decode(Bytes::copy_from_slice(&bytes[..bytes.len() - 1])).is_err());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(ChainBlock::decode(Bytes::from(trailing)).is_err());
        // A length prefix over the bound is refused before anything is allocated.
        let mut huge = Vec::new();
        (MAX_ENCODED_BLOCK + 1).write(&mut huge);
        huge.extend_from_slice(&[0; 64]);
        assert!(ChainBlock::decode(Bytes::from(huge)).is_err());
    }
}

/// The gossip batch codec.
mod gossip_batch {
    use super::*;

    fn batch(txs: &[&[u8]]) -> Batch {
        let mut b = Batch::new();
        for t in txs {
            b.push(t.to_vec()).expect("room");
        }
        b
    }

    /// What decoding `bytes` gives.
    fn check(bytes: &[u8], expect: Result<&[&[u8]], BatchError>) {
        let got = Batch::decode(bytes);
        match expect {
            Ok(txs) => assert_eq!(got, Ok(batch(txs))),
            Err(e) => assert_eq!(got, Err(e)),
        }
    }

    fn le(n: u32) -> [u8; 4] {
        n.to_le_bytes()
    }

    #[test]
    fn a_batch_has_a_frozen_wire_form_that_round_trips() {
        let b = batch(&[b"ab", b"c"]);
        let wire = b.encode();
        assert_eq!(hex::encode(&wire), "020000000200000061620100000063");
        assert_eq!(Batch::decode(&wire), Ok(b));
    }

    #[test]
    fn truncated_empty_oversized_or_trailing_input_is_an_error() {
        check(&[], Err(BatchError::Truncated));
        check(&[1, 0, 0], Err(BatchError::Truncated));
        check(&le(0), Err(BatchError::Count(0)));
        check(
            &le(MAX_BATCH_TXS as u32 + 1),
            Err(BatchError::Count(MAX_BATCH_TXS as u32 + 1)),
        );
        check(&le(u32::MAX), Err(BatchError::Count(u32::MAX)));
        // The count promises two, one is there.
        check(&[&le(2)[..], &le(1)[..], b"a"].concat(), Err(BatchError::Truncated));
        // A length that runs past the end.
        check(&[&le(1)[..], &le(5)[..], b"abc"].concat(), Err(BatchError::Truncated));
        check(&[le(1), le(0)].concat(), Err(BatchError::TxLength(0)));
        let over = MAX_TX_BYTES as u32 + 1;
        check(&[le(1), le(over)].concat(), Err(BatchError::TxLength(over)));
        check(&[&le(1)[..], &le(1)[..], b"ab"].concat(), Err(BatchError::Trailing(1)));
        check(&vec![0; MAX_MESSAGE + 1], Err(BatchError::TooLong(MAX_MESSAGE + 1)));
        check(&[&le(1)[..], &le(1)[..], b"a"].concat(), Ok(&[b"a"]));
    }

    #[test]
    fn transactions_over_the_batch_byte_bound_are_an_error() {
        // Within the message bound, above the byte bound: 18 transactions of 58,300 bytes.
        let tx = vec![1u8; 58_300];
        let n = 18;
        assert!(n * tx.len() > MAX_BATCH_BYTES);
        let mut wire = le(n as u32).to_vec();
        for _ in 0..n {
            wire.extend_from_slice(&le(tx.len() as u32));
            wire.extend_from_slice(&tx);
        }
        assert!(wire.len() <= MAX_MESSAGE);
        assert_eq!(Batch::decode(&wire), Err(BatchError::TooManyBytes));
    }

    #[test]
    fn a_full_batch_hands_the_next_transaction_back_and_still_decodes() {
        let mut b = Batch::new();
        let tx = vec![2u8; MAX_TX_BYTES];
        while b.push(tx.clone()).is_ok() {}
        assert!(b.is_full());
        assert_eq!(b.len(), MAX_BATCH_BYTES / MAX_TX_BYTES);
        let wire = b.encode();
        assert!(wire.len() <= MAX_MESSAGE);
        assert_eq!(Batch::decode(&wire), Ok(b));

        let mut b = Batch::new();
        while b.push(vec![3]).is_ok() {}
        assert_eq!(b.len(), MAX_BATCH_TXS);
        assert_eq!(Batch::decode(&b.encode()), Ok(b));
    }

    #[test]
    fn every_prefix_of_a_batch_is_refused_without_a_panic() {
        let wire = batch(&[b"abc", b"de", b"f"]).encode();
        for n in 0..wire.len() {
            assert!(Batch::decode(&wire[..n]).is_err(), "a {n}-byte prefix decoded");
        }
    }
}

/// A validator's peers.
mod peers {
    use super::*;

    #[test]
    fn a_peer_reads_as_key_at_host_and_port() {
        let key = "11".repeat(32);
        let p: Peer = format!("{key}@127.0.0.1:26656").parse().expect("a peer");
        assert_eq!(p.key, ConsensusKey([0x11; 32]));
        assert_eq!(p.addr, "127.0.0.1:26656");
        assert_eq!(p.to_string(), format!("{key}@127.0.0.1:26656"));
        for bad in [
            "127.0.0.1:26656".to_string(),
            format!("{key}@127.0.0.1"),
            format!("{key}@:1"),
            format!("{key}@host:port"),
            "zz@127.0.0.1:1".to_string(),
        ] {
            assert!(bad.parse::<Peer>().is_err(), "{bad} was accepted");
        }
    }

    fn key(n: u8) -> ConsensusKey {
        let pk = PrivateKey::decode(Copying(&[n; 32][..]))
            .expect("any 32 bytes")
            .public_key();
        let mut k = [0u8; 32];
        k.copy_from_slice(pk.as_ref());
        ConsensusKey(k)
    }

    fn peer(n: u8) -> Peer {
        Peer {
            key: key(n),
            addr: format!("127.0.0.1:{}", 30_000 + u16::from(n)),
        }
    }

    /// Validator 1 of `validators`, with `peers`: what `Simplex::new` says.
    fn check(validators: &[u8], peers: &[Peer]) -> Result<(), NetError> {
        Simplex::new(Settings {
            chain_id: "c".into(),
            genesis_hash: [0; 32],
            validators: validators.iter().map(|n| key(*n)).collect(),
            secret: Zeroizing::new([1; 32]),
            listen: "127.0.0.1:0".parse().expect("an address"),
            peers: peers.to_vec(),
            storage_dir: PathBuf::from("unused"),
            genesis: ChainBlock::genesis("c", 0, [0; 32]),
            block_time: Duration::from_millis(100),
            floor: None,
            certificates: MarshalCertificates::default(),
        })
        .map(|_| ())
    }

    #[test]
    fn a_validator_needs_an_address_for_every_other_genesis_validator() {
        assert!(check(&[1, 2, 3], &[peer(2), peer(3)]).is_ok());
        assert!(check(&[1], &[]).is_ok(), "a set of one needs no peers");
        assert!(
            check(&[2, 3], &[peer(2), peer(3)]).is_ok(),
            "a node in no set yet follows the chain"
        );
        assert!(matches!(check(&[1, 2, 3], &[peer(2)]), Err(NetError::NoAddress(k)) if k == key(3)));
        assert!(
            check(&[1, 2], &[peer(2), peer(4)]).is_ok(),
            "a peer outside the genesis set may be voted in later"
        );
        assert!(matches!(
            check(&[1, 2], &[peer(2), peer(1)]),
            Err(NetError::PeerIsSelf(_))
        ));
        assert!(matches!(
            check(&[1, 2], &[peer(2), peer(2)]),
            Err(NetError::DuplicatePeer(_))
        ));
    }
}
