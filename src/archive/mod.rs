//! The archive's pure parts: where outputs go ([`layout`]), pax tar framing ([`pax`]), and the
//! index and DLQ records ([`records`]).

pub mod layout;
pub mod pax;
pub mod records;
pub mod scan;
