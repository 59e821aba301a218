//! Generations and positions: the (generation, index, offset) triple and its text form.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Number of characters in a generation name.
pub(crate) const GENERATION_NAME_LEN: usize = 16;

/// Highest WAL index a generation may reach (`0x7FFFFFFF`); reaching it forces a new generation.
pub const MAX_INDEX: u32 = 0x7FFF_FFFF;

/// A generation ID: exactly 16 lowercase hexadecimal characters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(String);

impl Generation {
    /// Parse a generation name; `None` unless it is exactly 16 lowercase hex characters.
    pub fn parse(s: &str) -> Option<Generation> {
        is_generation_name(s).then(|| Generation(s.to_string()))
    }

    /// A new random generation ID (8 random bytes, hex encoded, as Litestream does).
    pub fn random() -> Generation {
        let bytes: [u8; 8] = rand::random();
        let mut s = String::with_capacity(GENERATION_NAME_LEN);
        for b in bytes {
            s.push_str(&format!("{b:02x}"));
        }
        Generation(s)
    }

    /// The generation name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Generation({})", self.0)
    }
}

impl FromStr for Generation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Generation> {
        Generation::parse(s)
            .ok_or_else(|| Error::InvalidArgument(format!("invalid generation name: {s:?}")))
    }
}

/// True if `s` is exactly 16 lowercase hexadecimal characters.
pub(crate) fn is_generation_name(s: &str) -> bool {
    s.len() == GENERATION_NAME_LEN && s.bytes().all(is_lower_hex)
}

pub(crate) fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// A position in a generation's WAL history: the WAL index and a byte offset into it.
///
/// Its text form is `<generation>/<index as %08x>:<offset in decimal>`, as Litestream prints it.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Pos {
    /// The generation.
    pub generation: Generation,
    /// The WAL index inside the generation.
    pub index: u32,
    /// Byte offset inside that index's WAL (the 32-byte header starts at 0).
    pub offset: u64,
}

impl Pos {
    /// A position.
    pub fn new(generation: Generation, index: u32, offset: u64) -> Pos {
        Pos {
            generation,
            index,
            offset,
        }
    }

    /// Compare two positions of the same generation by (index, offset).
    pub fn index_offset(&self) -> (u32, u64) {
        (self.index, self.offset)
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:08x}:{}", self.generation, self.index, self.offset)
    }
}

impl FromStr for Pos {
    type Err = Error;
    fn from_str(s: &str) -> Result<Pos> {
        let bad = || Error::InvalidArgument(format!("invalid position: {s:?}"));
        let (generation, rest) = s.split_once('/').ok_or_else(bad)?;
        let (index, offset) = rest.split_once(':').ok_or_else(bad)?;
        let generation = Generation::parse(generation).ok_or_else(bad)?;
        if index.len() != 8 {
            return Err(bad());
        }
        let index = u32::from_str_radix(index, 16).map_err(|_| bad())?;
        let offset = offset.parse::<u64>().map_err(|_| bad())?;
        Ok(Pos::new(generation, index, offset))
    }
}

/// Parse an index the way `-index` takes it: hexadecimal, with or without zero padding.
pub fn parse_index_hex(s: &str) -> Result<u32> {
    if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidArgument(format!(
            "invalid value {s:?} for flag -index: invalid hexadecimal format"
        )));
    }
    u32::from_str_radix(s, 16).map_err(|_| {
        Error::InvalidArgument(format!(
            "invalid value {s:?} for flag -index: invalid hexadecimal format"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pos_round_trips_through_text() {
        let pos: Pos = "f520e605ae791336/00000000:16512".parse().expect("parse");
        assert_eq!(pos.index, 0);
        assert_eq!(pos.offset, 16512);
        assert_eq!(pos.to_string(), "f520e605ae791336/00000000:16512");
    }

    #[test]
    fn generation_names_must_be_16_lowercase_hex() {
        assert!(is_generation_name("0123456789abcdef"));
        assert!(!is_generation_name("0123456789ABCDEF"));
        assert!(!is_generation_name("0123456789abcde"));
        assert!(!is_generation_name("0123456789abcdefa"));
        let g = Generation::random();
        assert!(is_generation_name(g.as_str()));
    }

    #[test]
    fn index_flag_is_hex() {
        assert_eq!(parse_index_hex("d").expect("hex"), 13);
        assert_eq!(parse_index_hex("0000000d").expect("hex"), 13);
        assert!(parse_index_hex("zz").is_err());
    }
}
