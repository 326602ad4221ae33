//! Pseudo-gradient compression: what each method keeps, error feedback that loses nothing over
//! rounds, a canonical blob that round-trips, and a decoder that refuses every malformed blob
//! with its own error and never panics.

use pazar_train::compress::{
    average, compress, update_hash, AverageError, CompressError, Method, Update, UpdateError, BLOCK, HEADER_BYTES,
    MAX_SCALE,
};
use pazar_train::data::{hex, SplitMix64};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

const MAX: usize = 1 << 24;

const METHODS: [Method; 5] = [
    Method::Int8,
    Method::TopK { per_mille: 10 },
    Method::TopK { per_mille: 30 },
    Method::TopKInt8 { per_mille: 10 },
    Method::TopKInt8 { per_mille: 30 },
];

/// `n` values from a seeded generator, spread over several orders of magnitude like a
/// pseudo-gradient: a uniform in [-1, 1) times 2^-e for e in 0..16.
fn vector(seed: u64, n: usize) -> Vec<f32> {
    let mut r = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let x = r.next_u64();
            let unit = ((x >> 40) as f32) / (1u32 << 23) as f32 - 1.0;
            let exp = (x & 15) as i32;
            unit * f32::powi(2.0, -exp)
        })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes).into())
}

fn method_strategy() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Int8),
        (1u16..=1000).prop_map(|per_mille| Method::TopK { per_mille }),
        (1u16..=1000).prop_map(|per_mille| Method::TopKInt8 { per_mille }),
    ]
}

/// Finite floats of any magnitude, zeros, subnormals and ±f32::MAX included.
fn value_strategy() -> impl Strategy<Value = f32> {
    prop_oneof![
        -1.0e3f32..1.0e3,
        -1.0e-30f32..1.0e-30,
        Just(0.0f32),
        Just(-0.0f32),
        Just(f32::from_bits(1)),
        Just(f32::MAX),
        Just(-f32::MAX),
        any::<u32>()
            .prop_map(f32::from_bits)
            .prop_filter("finite", |x| x.is_finite()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Frozen bytes.

#[test]
fn compressed_update_bytes_are_frozen() {
    let delta = vector(1, 1000);
    let ef = vector(2, 1000);
    let expect = [
        (
            Method::Int8,
            "262245d23c3fc8909e9bdbcc642de112a831705e172075e8aa22565dc9b9d340",
        ),
        (
            Method::TopK { per_mille: 30 },
            "c3a1342a1b5f30eda16be1c51e6aa1451483401cbce2c1b1cb9272e4f3c700b1",
        ),
        (
            Method::TopKInt8 { per_mille: 30 },
            "a35f9eff696da62bc8bfde96b416c74d45ce0600f56ad6a9c7978de392ef1916",
        ),
    ];
    for (method, hash) in expect {
        let (u, _) = compress(method, &delta, &ef).expect("compress");
        assert_eq!(
            sha256_hex(&u.encode()),
            hash,
            "{method:?}: the update format or the compressor changed"
        );
    }
}

#[test]
fn update_hash_is_domain_separated_sha256() {
    let mut h = Sha256::new();
    h.update(b"pazar/train/update/v1\0");
    h.update(b"blob");
    let want: [u8; 32] = h.finalize().into();
    assert_eq!(update_hash(b"blob"), want);
    assert_ne!(update_hash(b"blob"), <[u8; 32]>::from(Sha256::digest(b"blob")));
}

// ---------------------------------------------------------------------------------------------
// What each method keeps.

#[test]
fn int8_codes_are_within_half_a_step_of_each_value() {
    let v = vector(3, 3 * BLOCK + 17);
    let zeros = vec![0.0; v.len()];
    let (u, ef) = compress(Method::Int8, &v, &zeros).expect("compress");
    assert_eq!(u.k() as usize, v.len());
    let d = u.decompress();
    for (b, block) in v.chunks(BLOCK).enumerate() {
        let max = block.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let scale = max / 127.0;
        for (j, x) in block.iter().enumerate() {
            let i = b * BLOCK + j;
            // Half a step, plus the rounding of the division and the product.
            assert!((x - d[i]).abs() <= scale * 0.5001, "index {i}: {x} vs {}", d[i]);
            assert_eq!(ef[i].to_bits(), (x - d[i]).to_bits());
        }
    }
}

#[test]
fn top_k_keeps_exactly_the_largest_magnitudes() {
    let v = vector(4, 5000);
    let zeros = vec![0.0; v.len()];
    let (u, ef) = compress(Method::TopK { per_mille: 30 }, &v, &zeros).expect("compress");
    assert_eq!(u.k(), 150);
    // Reference: sort every index by (|v| descending, index ascending), take 150.
    let mut order: Vec<u32> = (0..v.len() as u32).collect();
    order.sort_by(|&a, &b| v[b as usize].abs().total_cmp(&v[a as usize].abs()).then(a.cmp(&b)));
    let mut want = order[..150].to_vec();
    want.sort_unstable();
    assert_eq!(u.indices(), &want[..]);
    let d = u.decompress();
    for i in 0..v.len() {
        if want.binary_search(&(i as u32)).is_ok() {
            assert_eq!(d[i].to_bits(), v[i].to_bits());
            assert_eq!(ef[i], 0.0);
        } else {
            assert_eq!(d[i].to_bits(), 0.0f32.to_bits());
            assert_eq!(ef[i].to_bits(), v[i].to_bits());
        }
    }
}

#[test]
fn equal_magnitudes_are_kept_from_the_lowest_index() {
    let v = vec![0.5, -2.0, 2.0, 1.0, -2.0, 2.0, 0.0, 0.0, 0.0, 0.0];
    let zeros = vec![0.0; v.len()];
    // 300 per mille of 10 keeps 3: the three 2.0s at 1, 2, 4, not the one at 5.
    let (u, _) = compress(Method::TopK { per_mille: 300 }, &v, &zeros).expect("compress");
    assert_eq!(u.indices(), &[1, 2, 4]);
    // All zero: k = 1 keeps index 0.
    let (u, _) = compress(Method::TopK { per_mille: 1 }, &zeros, &zeros).expect("compress");
    assert_eq!(u.indices(), &[0]);
}

#[test]
fn top_k_int8_quantises_the_kept_values_in_blocks_of_256() {
    let v = vector(5, 20_000);
    let zeros = vec![0.0; v.len()];
    let (topk, _) = compress(Method::TopK { per_mille: 30 }, &v, &zeros).expect("compress");
    let (both, ef) = compress(Method::TopKInt8 { per_mille: 30 }, &v, &zeros).expect("compress");
    assert_eq!(both.indices(), topk.indices());
    assert_eq!(both.k(), 600);
    let kept: Vec<f32> = topk.indices().iter().map(|&i| v[i as usize]).collect();
    let d = both.decompress();
    for (block_no, block) in kept.chunks(BLOCK).enumerate() {
        let scale = block.iter().fold(0.0f32, |m, x| m.max(x.abs())) / 127.0;
        for (j, x) in block.iter().enumerate() {
            let i = topk.indices()[block_no * BLOCK + j] as usize;
            assert!((x - d[i]).abs() <= scale * 0.5001);
            assert_eq!(ef[i].to_bits(), (x - d[i]).to_bits());
        }
    }
}

#[test]
fn the_largest_finite_values_compress_to_finite_values() {
    let v = [f32::MAX, -f32::MAX, 1.0, -f32::MAX / 2.0];
    let zeros = [0.0; 4];
    for method in [
        Method::Int8,
        Method::TopKInt8 { per_mille: 1000 },
        Method::TopK { per_mille: 500 },
    ] {
        let (u, ef) = compress(method, &v, &zeros).expect("compress");
        assert!(u.decompress().iter().all(|x| x.is_finite()), "{method:?}");
        assert!(ef.iter().all(|x| x.is_finite()), "{method:?}");
        let bytes = u.encode();
        assert_eq!(Update::decode(&bytes, 4, MAX).expect("decode").encode(), bytes);
    }
}

#[test]
fn bad_inputs_to_compress_are_refused() {
    let m = Method::Int8;
    assert_eq!(
        compress(m, &[1.0, 2.0], &[0.0]).map(|_| ()),
        Err(CompressError::LengthMismatch { delta: 2, ef: 1 })
    );
    assert_eq!(compress(m, &[], &[]).map(|_| ()), Err(CompressError::Empty));
    assert_eq!(
        compress(m, &[1.0, f32::NAN], &[0.0, 0.0]).map(|_| ()),
        Err(CompressError::NonFinite { index: 1 })
    );
    // Finite inputs whose sum overflows.
    assert_eq!(
        compress(m, &[f32::MAX], &[f32::MAX]).map(|_| ()),
        Err(CompressError::NonFinite { index: 0 })
    );
    for per_mille in [0, 1001] {
        assert_eq!(
            compress(Method::TopK { per_mille }, &[1.0], &[0.0]).map(|_| ()),
            Err(CompressError::PerMille(per_mille))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The blob's size.

#[test]
fn varint_indices_are_smaller_than_fixed_width() {
    let n = 250_000;
    let v = vector(6, n);
    let zeros = vec![0.0; n];
    for per_mille in [10u16, 30] {
        let (u, _) = compress(Method::TopK { per_mille }, &v, &zeros).expect("compress");
        let k = u.k() as usize;
        let fixed = HEADER_BYTES + 4 * k + 4 * k;
        let varint = u.encode().len();
        // At these densities most gaps are below 128: about one byte per index, not four.
        assert!(
            varint * 10 < fixed * 7,
            "{per_mille}‰: {varint} bytes with varints, {fixed} with u32 indices"
        );
    }
}

#[test]
fn blob_sizes_follow_the_layout() {
    let n = 1000;
    let v = vector(7, n);
    let zeros = vec![0.0; n];
    let (u, _) = compress(Method::Int8, &v, &zeros).expect("compress");
    assert_eq!(u.encode().len(), HEADER_BYTES + 4 * n.div_ceil(BLOCK) + n);
    let (u, _) = compress(Method::TopK { per_mille: 1000 }, &v, &zeros).expect("compress");
    // Every index kept: every gap is 1, one byte each (the first index, 0, is one byte too).
    assert_eq!(u.encode().len(), HEADER_BYTES + n + 4 * n);
}

// ---------------------------------------------------------------------------------------------
// Averaging.

#[test]
fn average_sums_in_the_given_order_then_scales() {
    let n = 700;
    let zeros = vec![0.0; n];
    let updates: Vec<Update> = METHODS
        .iter()
        .enumerate()
        .map(|(i, &m)| compress(m, &vector(10 + i as u64, n), &zeros).expect("compress").0)
        .collect();
    let mut want = vec![0.0f32; n];
    for u in &updates {
        for (w, x) in want.iter_mut().zip(u.decompress()) {
            *w += x;
        }
    }
    let inv = 1.0f32 / updates.len() as f32;
    let want: Vec<f32> = want.iter().map(|x| x * inv).collect();
    assert_eq!(bits(&average(&updates, n as u32).expect("average")), bits(&want));
    // A different order may round differently, so the order is the caller's to fix.
    let one = average(&updates[..1], n as u32).expect("average");
    assert_eq!(bits(&one), bits(&updates[0].decompress()));
}

#[test]
fn the_mean_of_one_update_turns_negative_zero_into_zero() {
    // A kept -0.0 decompresses as -0.0, but a sum starts at +0.0 and +0.0 + -0.0 is +0.0.
    let (u, _) = compress(Method::TopK { per_mille: 1000 }, &[-0.0, 2.0], &[-0.0, 0.0]).expect("compress");
    assert_eq!(bits(&u.decompress()), bits(&[-0.0, 2.0]));
    assert_eq!(bits(&average(&[u], 2).expect("average")), bits(&[0.0, 2.0]));
}

#[test]
fn an_average_that_overflows_is_refused() {
    let v = [1.0, f32::MAX];
    let (u, _) = compress(Method::TopK { per_mille: 1000 }, &v, &[0.0; 2]).expect("compress");
    assert_eq!(average(&[u.clone(), u], 2), Err(AverageError::NonFinite { index: 1 }));
}

#[test]
fn average_refuses_no_updates_and_mixed_lengths() {
    let (a, _) = compress(Method::Int8, &[1.0; 4], &[0.0; 4]).expect("compress");
    let (b, _) = compress(Method::Int8, &[1.0; 5], &[0.0; 5]).expect("compress");
    assert_eq!(average(&[], 4), Err(AverageError::Empty));
    assert_eq!(
        average(&[a, b], 4),
        Err(AverageError::WrongLength {
            position: 1,
            n: 5,
            expected: 4
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Malformed blobs: one check per class.

/// A blob header.
fn header(method: u8, per_mille: u16, n: u32, k: u32) -> Vec<u8> {
    let mut b = b"PZUP".to_vec();
    b.push(1);
    b.push(method);
    b.extend_from_slice(&per_mille.to_le_bytes());
    b.extend_from_slice(&n.to_le_bytes());
    b.extend_from_slice(&k.to_le_bytes());
    b
}

fn f32s(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A top-k blob of n = 10 at 200‰ (k = 2) with the given index bytes and values.
fn topk_blob(index_bytes: &[u8], values: &[f32]) -> Vec<u8> {
    let mut b = header(2, 200, 10, 2);
    b.extend_from_slice(index_bytes);
    b.extend_from_slice(&f32s(values));
    b
}

/// An int8 blob of n = 3: one scale, three codes.
fn int8_blob(scale: f32, codes: [i8; 3]) -> Vec<u8> {
    let mut b = header(1, 0, 3, 3);
    b.extend_from_slice(&f32s(&[scale]));
    b.extend(codes.iter().map(|c| c.to_le_bytes()[0]));
    b
}

fn check(bytes: &[u8], expected_n: u32, want: UpdateError) {
    assert_eq!(Update::decode(bytes, expected_n, MAX), Err(want), "{bytes:02x?}");
}

#[test]
fn hand_built_valid_blobs_decode_and_re_encode_to_themselves() {
    for b in [
        topk_blob(&[3, 4], &[1.5, -0.25]),
        int8_blob(0.5, [127, -127, 0]),
        int8_blob(0.0, [0, 0, 0]),
    ] {
        let n = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        let u = Update::decode(&b, n, MAX).expect("valid");
        assert_eq!(u.encode(), b);
    }
    let u = Update::decode(&topk_blob(&[3, 4], &[1.5, -0.25]), 10, MAX).expect("valid");
    assert_eq!(u.indices(), &[3, 7]);
    assert_eq!(
        bits(&u.decompress()),
        bits(&[0.0, 0.0, 0.0, 1.5, 0.0, 0.0, 0.0, -0.25, 0.0, 0.0])
    );
}

#[test]
fn every_malformed_blob_class_is_refused_with_its_error() {
    let good = topk_blob(&[3, 4], &[1.5, -0.25]);
    let with = |at: usize, byte: u8| {
        let mut b = good.clone();
        b[at] = byte;
        b
    };

    let len = good.len();
    assert_eq!(
        Update::decode(&good, 10, len - 1),
        Err(UpdateError::TooLarge { len, max: len - 1 })
    );
    check(
        &good[..HEADER_BYTES - 1],
        10,
        UpdateError::Truncated {
            section: "header",
            needed: HEADER_BYTES as u64,
            have: HEADER_BYTES - 1,
        },
    );
    check(&with(0, b'X'), 10, UpdateError::BadMagic);
    check(&with(4, 2), 10, UpdateError::UnsupportedVersion(2));
    check(&with(5, 9), 10, UpdateError::UnknownMethod(9));
    check(&with(5, 0), 10, UpdateError::UnknownMethod(0));
    check(
        &header(2, 0, 10, 1),
        10,
        UpdateError::BadPerMille {
            method: 2,
            per_mille: 0,
        },
    );
    check(
        &header(3, 1001, 10, 10),
        10,
        UpdateError::BadPerMille {
            method: 3,
            per_mille: 1001,
        },
    );
    check(
        &header(1, 5, 3, 3),
        3,
        UpdateError::BadPerMille {
            method: 1,
            per_mille: 5,
        },
    );
    check(&good, 11, UpdateError::WrongLength { n: 10, expected: 11 });
    check(&header(1, 0, 0, 0), 0, UpdateError::Empty);
    check(&header(2, 200, 10, 11), 10, UpdateError::KTooLarge { k: 11, n: 10 });
    check(
        &header(2, 200, 10, 3),
        10,
        UpdateError::KMismatch {
            k: 3,
            expected: 2,
            n: 10,
        },
    );
    check(
        &header(1, 0, 3, 2),
        3,
        UpdateError::KMismatch {
            k: 2,
            expected: 3,
            n: 3,
        },
    );
    // Indices: a zero gap, past the end, a gap that runs past the end, non-canonical varints.
    check(
        &topk_blob(&[3, 0], &[1.0, 1.0]),
        10,
        UpdateError::IndexNotAscending { position: 1 },
    );
    check(
        &topk_blob(&[10, 1], &[1.0, 1.0]),
        10,
        UpdateError::IndexOutOfRange {
            position: 0,
            index: 10,
            n: 10,
        },
    );
    check(
        &topk_blob(&[3, 7], &[1.0, 1.0]),
        10,
        UpdateError::IndexOutOfRange {
            position: 1,
            index: 10,
            n: 10,
        },
    );
    let mut overlong = header(2, 200, 10, 2);
    overlong.extend_from_slice(&[0x83, 0x00, 0x01]);
    overlong.extend_from_slice(&f32s(&[1.0, 1.0]));
    check(&overlong, 10, UpdateError::BadVarint { position: 0 });
    let mut endless = header(2, 200, 10, 2);
    endless.extend_from_slice(&[0x80; 10]);
    check(&endless, 10, UpdateError::BadVarint { position: 0 });
    // Values and scales.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        check(
            &topk_blob(&[3, 4], &[1.0, bad]),
            10,
            UpdateError::NonFiniteValue {
                position: 1,
                bits: bad.to_bits(),
            },
        );
    }
    // A scale above MAX_SCALE would decode a finite code to infinity (found by the fuzzer).
    let above = f32::from_bits(MAX_SCALE.to_bits() + 1);
    assert!(Update::decode(&int8_blob(MAX_SCALE, [127, -127, 1]), 3, MAX).is_ok());
    for bad in [f32::NAN, f32::INFINITY, -1.0, -0.0, above, 6.4e37] {
        check(
            &int8_blob(bad, [1, 2, 3]),
            3,
            UpdateError::BadScale {
                block: 0,
                bits: bad.to_bits(),
            },
        );
    }
    check(
        &int8_blob(0.5, [1, -128, 3]),
        3,
        UpdateError::CodeOutOfRange { position: 1 },
    );
    check(
        &int8_blob(0.0, [0, 0, 1]),
        3,
        UpdateError::ZeroScaleNonZeroCode { block: 0 },
    );
    // Length: a short payload, and bytes after the end.
    check(
        &good[..len - 1],
        10,
        UpdateError::Truncated {
            section: "indices and values",
            needed: 10,
            have: 9,
        },
    );
    let mut short_values = header(2, 2, 1000, 2);
    short_values.extend_from_slice(&[0x81, 0x01, 0x01]); // a two-byte index eats a value byte
    short_values.extend_from_slice(&f32s(&[1.0, 1.0])[..7]);
    check(
        &short_values,
        1000,
        UpdateError::Truncated {
            section: "values",
            needed: 8,
            have: 7,
        },
    );
    let mut trailing = good.clone();
    trailing.push(0);
    check(&trailing, 10, UpdateError::TrailingBytes { count: 1 });
    let mut int8_short = int8_blob(0.5, [1, 2, 3]);
    int8_short.pop();
    check(
        &int8_short,
        3,
        UpdateError::Truncated {
            section: "scales and codes",
            needed: 7,
            have: 6,
        },
    );
}

#[test]
fn a_huge_claimed_k_is_refused_before_allocating() {
    // n = k = u32::MAX at 1000‰ with a 16-byte blob: refused for its length, not by running
    // out of memory.
    let b = header(2, 1000, u32::MAX, u32::MAX);
    assert!(matches!(
        Update::decode(&b, u32::MAX, MAX),
        Err(UpdateError::Truncated { .. })
    ));
    let b = header(1, 0, u32::MAX, u32::MAX);
    assert!(matches!(
        Update::decode(&b, u32::MAX, MAX),
        Err(UpdateError::Truncated { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn updates_round_trip_through_their_canonical_bytes(
        method in method_strategy(),
        delta in proptest::collection::vec(value_strategy(), 1..1200),
        ef_seed in any::<u64>(),
    ) {
        let ef = vector(ef_seed, delta.len());
        let (u, new_ef) = compress(method, &delta, &ef).expect("compress");
        prop_assert_eq!(u.method(), method);
        prop_assert_eq!(u.n() as usize, delta.len());
        let bytes = u.encode();
        let back = Update::decode(&bytes, u.n(), bytes.len()).expect("decode");
        prop_assert_eq!(back.encode(), bytes.clone());
        prop_assert_eq!(bits(&back.decompress()), bits(&u.decompress()));
        prop_assert!(back == u);
        // The new buffer is exactly v - decompress(update), computed in f32.
        let d = u.decompress();
        for i in 0..delta.len() {
            let v = delta[i] + ef[i];
            prop_assert_eq!(new_ef[i].to_bits(), (v - d[i]).to_bits(), "index {}", i);
        }
    }

    #[test]
    fn error_feedback_delays_but_never_loses_the_signal(
        method in method_strategy(),
        n in 1usize..600,
        rounds in 1usize..40,
        seed in any::<u64>(),
    ) {
        let mut ef = vec![0.0f32; n];
        let mut sum_delta = vec![0.0f64; n];
        let mut sum_sent = vec![0.0f64; n];
        let mut largest = 0.0f64;
        for r in 0..rounds {
            let delta = vector(seed.wrapping_add(r as u64), n);
            for i in 0..n {
                sum_delta[i] += f64::from(delta[i]);
                largest = largest.max(f64::from((delta[i] + ef[i]).abs()));
            }
            let (u, new_ef) = compress(method, &delta, &ef).expect("compress");
            for (s, x) in sum_sent.iter_mut().zip(u.decompress()) {
                *s += f64::from(x);
            }
            ef = new_ef;
        }
        // Each round adds at most two f32 roundings of numbers no larger than |v| (the sum
        // delta + ef and the difference v - decompressed), so the books balance to within
        // rounds * 2 * 2^-24 * max|v|.
        let bound = rounds as f64 * 2.0 * f64::from(f32::EPSILON) / 2.0 * largest * 1.01 + 1e-30;
        for i in 0..n {
            let err = (sum_sent[i] + f64::from(ef[i]) - sum_delta[i]).abs();
            prop_assert!(err <= bound, "index {}: off by {} > {}", i, err, bound);
        }
    }

    #[test]
    fn decoding_random_bytes_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        n in 0u32..300,
    ) {
        if let Ok(u) = Update::decode(&bytes, n, MAX) {
            prop_assert_eq!(u.encode(), bytes);
        }
    }

    #[test]
    fn mutated_blobs_are_refused_or_canonical(
        method in method_strategy(),
        seed in any::<u64>(),
        n in 1usize..800,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let (u, _) = compress(method, &vector(seed, n), &vec![0.0; n]).expect("compress");
        let mut bytes = u.encode();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Some(c) = cut {
            bytes.truncate(c.index(bytes.len()));
        }
        if let Ok(back) = Update::decode(&bytes, n as u32, MAX) {
            prop_assert_eq!(back.encode(), bytes);
            prop_assert!(back.decompress().iter().all(|x| x.is_finite()));
        }
    }
}
