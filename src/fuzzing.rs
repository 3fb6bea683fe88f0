//! Shared pieces of the property tests that feed outside data to every parser (SPEC section 2:
//! nothing ever panics on bad input). Test-only.

use proptest::collection::vec;
use proptest::prelude::*;

/// Bytes that matter to the formats read: CSV and JSON punctuation, key escapes, digits, NUL and
/// bytes that are not UTF-8.
const NASTY: &[u8] = b"\0\n\r,\"%+ {}[]:\\=09aF\x7f\x80\xc3\xff";

/// Up to 4 KiB of arbitrary bytes.
pub fn garbage() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..4096)
}

fn nasty_byte() -> impl Strategy<Value = u8> {
    prop_oneof![any::<u8>(), proptest::sample::select(NASTY)]
}

/// Text of 1 to 40 characters, heavy on the ones that need escaping somewhere: newlines, commas,
/// quotes, `%`, `+`, spaces and non-ASCII.
pub fn odd_text() -> impl Strategy<Value = String> {
    let odd = proptest::sample::select(vec![
        '\n',
        '\r',
        ',',
        '"',
        '%',
        '+',
        ' ',
        '=',
        '/',
        '\u{e9}',
        '\u{65e5}',
        '\u{1F600}',
        '\0',
    ]);
    vec(
        prop_oneof![any::<char>(), odd, proptest::char::range('a', 'z')],
        1..40,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

/// One change to a valid encoding. Positions are taken modulo the length.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Overwrite(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    /// Repeats a slice in place: long fields, repeated records.
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip(at, 1 << bit)),
        (any::<usize>(), nasty_byte()).prop_map(|(at, b)| Mutation::Overwrite(at, b)),
        (any::<usize>(), nasty_byte()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..64).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    let at = |i: usize| if len == 0 { 0 } else { i % len };
    match *mutation {
        Mutation::Flip(i, mask) if len > 0 => bytes[at(i)] ^= mask,
        Mutation::Overwrite(i, byte) if len > 0 => bytes[at(i)] = byte,
        Mutation::Insert(i, byte) => bytes.insert(i % (len + 1), byte),
        Mutation::Delete(i) if len > 0 => {
            bytes.remove(at(i));
        }
        Mutation::Truncate(i) => bytes.truncate(i % (len + 1)),
        Mutation::Duplicate(i, n) if len > 0 => {
            let start = at(i);
            let piece = bytes[start..(start + n).min(len)].to_vec();
            bytes.splice(start..start, piece);
        }
        _ => {}
    }
}

/// One to five mutations: bits flipped, nasty bytes written or inserted, bytes deleted, the end
/// cut off, a slice repeated.
#[derive(Debug, Clone)]
pub struct Mutations(Vec<Mutation>);

impl Mutations {
    pub fn apply(&self, bytes: &mut Vec<u8>) {
        for m in &self.0 {
            apply(bytes, m);
        }
    }
}

pub fn mutations() -> impl Strategy<Value = Mutations> {
    vec(mutation(), 1..6).prop_map(Mutations)
}

/// Valid encodings from `valid`, each changed by [`mutations`].
pub fn mutated(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (valid, mutations()).prop_map(|(mut bytes, mutations)| {
        mutations.apply(&mut bytes);
        bytes
    })
}

/// [`mutated`] for a fixed valid encoding.
pub fn mutated_from(valid: impl Into<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    mutated(Just(valid.into()))
}

/// [`mutated`] as text (lossily), for parsers that take `&str`.
pub fn mutated_text(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = String> {
    mutated(valid).prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// Arbitrary text of up to 4 KiB.
pub fn garbage_text() -> impl Strategy<Value = String> {
    garbage().prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// Whether `result` is Ok, or an error that names `location` (the file, table or object).
pub fn ok_or_names<T>(result: &crate::Result<T>, location: &str) -> bool {
    result
        .as_ref()
        .err()
        .is_none_or(|e| e.to_string().contains(location))
}

/// `cases` cases per property, the rest as proptest's defaults.
pub fn cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// The test binary's allocator: the system's, noting the largest single allocation each thread
/// asks for, so that a property can check that outside data never makes a parser allocate
/// without bound (an allocation sized by a damaged length field).
struct LargestAllocation;

thread_local! {
    /// Const-initialized without a destructor: usable inside the allocator.
    static LARGEST: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every call goes to the system allocator unchanged; `note` only touches a
// const-initialized thread-local `Cell`, which neither allocates nor panics.
unsafe impl std::alloc::GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// What `run` returns, and the largest single allocation it made on this thread.
pub fn largest_allocation<T>(run: impl FnOnce() -> T) -> (T, usize) {
    let before = LARGEST.with(|largest| largest.replace(0));
    let result = run();
    let largest = LARGEST.with(|largest| largest.replace(before.max(largest.get())));
    (result, largest)
}
