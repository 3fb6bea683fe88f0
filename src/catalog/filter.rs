//! Key filters: a Bloom filter of the keys a manifest holds, kept on the catalog entries of
//! incremental runs and redrives. Their manifests hold a few scattered keys over a wide range,
//! so after a year of weekly runs every key lies in the range of one manifest per run; the
//! filter rules out the runs that did not change the key, and `locate` reads one or two indexes
//! instead of fifty.
//!
//! Ten bits a key and seven probes give about 1% false positives; a false positive costs one
//! index read, a false negative is impossible. The text form is `bloom7:` and base64 of the
//! bits; a filter in any other form is treated as "may hold", so a future format can never hide
//! a key from an older reader.

use base64::Engine;
use md5::{Digest, Md5};

/// Bits kept per key.
const BITS_PER_KEY: usize = 10;
/// Probes per key: ln 2 × bits per key, rounded.
const PROBES: u64 = 7;
const TAG: &str = "bloom7:";

/// A Bloom filter of source keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFilter {
    bits: Vec<u8>,
}

/// Two independent 64-bit hashes of a key, for double hashing (Kirsch and Mitzenmacher).
fn hashes(key: &str) -> (u64, u64) {
    let digest = Md5::digest(key.as_bytes());
    let mut low = [0u8; 8];
    let mut high = [0u8; 8];
    low.copy_from_slice(&digest[..8]);
    high.copy_from_slice(&digest[8..]);
    // An odd step is never zero, so the probes do not all fall on one bit.
    (u64::from_le_bytes(low), u64::from_le_bytes(high) | 1)
}

/// The bits of a filter of `bytes` bytes that `key` sets.
fn positions(bytes: usize, key: &str) -> impl Iterator<Item = usize> {
    let size = bytes as u64 * 8;
    let (start, step) = hashes(key);
    (0..PROBES).map(move |i| (start.wrapping_add(i.wrapping_mul(step)) % size) as usize)
}

impl KeyFilter {
    /// An empty filter sized for `keys` keys.
    pub fn with_capacity(keys: usize) -> Self {
        let bytes = (keys.max(1) * BITS_PER_KEY).div_ceil(8).max(8);
        KeyFilter {
            bits: vec![0; bytes],
        }
    }

    /// The filter of `keys`.
    pub fn of_keys<'k>(keys: impl ExactSizeIterator<Item = &'k str>) -> Self {
        let mut filter = KeyFilter::with_capacity(keys.len());
        for key in keys {
            filter.insert(key);
        }
        filter
    }

    pub fn insert(&mut self, key: &str) {
        for position in positions(self.bits.len(), key) {
            self.bits[position / 8] |= 1 << (position % 8);
        }
    }

    /// False only when `key` was never inserted.
    pub fn may_hold(&self, key: &str) -> bool {
        positions(self.bits.len(), key)
            .all(|position| self.bits[position / 8] & (1 << (position % 8)) != 0)
    }

    /// The text kept in a catalog entry.
    pub fn encode(&self) -> String {
        format!(
            "{TAG}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(&self.bits)
        )
    }

    /// The filter of a catalog entry's text; `None` when it is not one this version reads.
    pub fn decode(text: &str) -> Option<Self> {
        let bits = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text.strip_prefix(TAG)?)
            .ok()?;
        (!bits.is_empty()).then_some(KeyFilter { bits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every inserted key is found again after a round trip through the text form.
        #[test]
        fn a_filter_never_loses_a_key(keys in proptest::collection::vec(".{0,40}", 0..300)) {
            let filter = KeyFilter::of_keys(keys.iter().map(String::as_str));
            let filter = KeyFilter::decode(&filter.encode()).expect("decodes");
            for key in &keys {
                prop_assert!(filter.may_hold(key), "{key:?} lost");
            }
        }
    }

    #[test]
    fn about_one_key_in_a_hundred_is_a_false_positive() {
        let keys: Vec<String> = (0..10_000).map(|n| format!("photos/{n:09}.jpg")).collect();
        let filter = KeyFilter::of_keys(keys.iter().map(String::as_str));
        assert_eq!(filter.encode().len(), TAG.len() + 16_667);
        let false_positives = (0..100_000)
            .filter(|n| filter.may_hold(&format!("photos/{:09}.jpg", n + 10_000)))
            .count();
        assert!(
            (300..2_000).contains(&false_positives),
            "{false_positives} false positives in 100,000"
        );
    }

    #[test]
    fn a_filter_this_version_cannot_read_is_none() {
        assert_eq!(KeyFilter::decode("cuckoo:AAAA"), None);
        assert_eq!(KeyFilter::decode("bloom7:!!"), None);
        assert_eq!(KeyFilter::decode("bloom7:"), None);
    }
}
