//! Human sizes on the command line: `4GiB`, `4G`, `4GB`, `512MiB`, `64k` or plain bytes.
//! `G` and `GB` are binary (powers of 1024), as in the original tools.

use std::fmt;
use std::str::FromStr;

/// A number of bytes parsed from a human size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        let number: u64 = digits
            .parse()
            .map_err(|_| format!("`{text}` is not a size: expected a whole number with an optional unit, like 4GiB, 512MiB, 64k or 1048576"))?;
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            _ => {
                return Err(format!(
                "`{text}` has an unknown size unit `{unit}`: use k, M, G or T (binary), e.g. 4GiB"
            ))
            }
        };
        number
            .checked_mul(1u64 << shift)
            .map(ByteSize)
            .ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl ByteSize {
    /// The size as the command line takes it, exactly (`4GiB`, `64KiB`, `1000`), where
    /// [`Display`](fmt::Display) rounds for people.
    pub fn as_argument(self) -> String {
        const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
        UNITS
            .iter()
            .find(|(_, shift)| self.0 != 0 && self.0.is_multiple_of(1u64 << shift))
            .map_or_else(
                || self.0.to_string(),
                |(unit, shift)| format!("{}{unit}", self.0 >> shift),
            )
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&human_bytes(self.0))
    }
}

/// Formats a byte count with a binary unit, for summaries and logs.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> u64 {
        text.parse::<ByteSize>()
            .map(|s| s.0)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn binary_units_in_every_spelling() {
        assert_eq!(parse("4GiB"), 4 << 30);
        assert_eq!(parse("4G"), 4 << 30);
        assert_eq!(parse("4GB"), 4 << 30);
        assert_eq!(parse("512MiB"), 512 << 20);
        assert_eq!(parse("64k"), 64 << 10);
        assert_eq!(parse("1048576"), 1 << 20);
        assert_eq!(parse("2 gib"), 2 << 30);
    }

    #[test]
    fn rejects_garbage_and_overflow() {
        assert!("".parse::<ByteSize>().is_err());
        assert!("GiB".parse::<ByteSize>().is_err());
        assert!("4XB".parse::<ByteSize>().is_err());
        assert!("-4G".parse::<ByteSize>().is_err());
        assert!("99999999999T".parse::<ByteSize>().is_err());
    }

    #[test]
    fn human_bytes_is_readable() {
        assert_eq!(human_bytes(17), "17 B");
        assert_eq!(human_bytes(4 << 30), "4.0 GiB");
    }

    #[test]
    fn sizes_as_arguments_take_the_largest_exact_unit() {
        assert_eq!(ByteSize(4 << 30).as_argument(), "4GiB");
        assert_eq!(ByteSize(1536 << 10).as_argument(), "1536KiB");
        assert_eq!(ByteSize(1000).as_argument(), "1000");
        assert_eq!(ByteSize(0).as_argument(), "0");
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;
    use crate::fuzzing::{cases, garbage_text, mutated_text};

    proptest! {
        #![proptest_config(cases(2048))]

        #[test]
        fn garbage_sizes_never_panic(text in garbage_text()) {
            if let Err(e) = text.parse::<ByteSize>() {
                prop_assert!(e.contains(&format!("`{text}`")), "{}", e);
            }
        }

        #[test]
        fn mutated_sizes_never_panic(text in mutated_text(proptest::sample::select(vec!["4GiB", "512MiB", "64k", "1048576", " 2 tb "]).prop_map(|s| s.as_bytes().to_vec()))) {
            let _ = text.parse::<ByteSize>();
        }

        #[test]
        fn sizes_round_trip_in_every_unit(n in any::<u64>(), unit in 0usize..5, spelling in 0usize..3) {
            let spellings = [["", "b", "B"], ["k", "KB", "KiB"], ["M", "mb", "MiB"], ["G", "GB", "gib"], ["T", "TB", "TiB"]];
            let text = format!("{n}{}", spellings[unit][spelling]);
            let want = n.checked_mul(1 << (10 * unit));
            prop_assert_eq!(text.parse::<ByteSize>().ok().map(|s| s.0), want);
        }

        #[test]
        fn sizes_as_arguments_parse_back(n in any::<u64>()) {
            prop_assert_eq!(ByteSize(n).as_argument().parse::<ByteSize>(), Ok(ByteSize(n)));
        }
    }
}
