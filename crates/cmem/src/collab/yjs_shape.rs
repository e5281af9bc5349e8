//! How deeply a Yjs update nests, measured before yrs decodes it.
//!
//! yrs decodes the lib0 `Any` values inside an update (array and map contents, sub-document
//! options) recursively, with no depth limit, and so do its encoder and `Drop`. An update of
//! 200 kB holding 100,000 nested one-element arrays overflows the stack and aborts the whole
//! server, and one stored would abort every later `doc_sync`. No crate checks this, so
//! [`any_depth_v1`] walks the update's v1 encoding the way `Update::decode_v1` reads it (yrs
//! 0.28: blocks per client, then item contents), iteratively, and reports the deepest `Any`;
//! the caller refuses updates deeper than [`MAX_ANY_DEPTH`] before yrs sees them.
//!
//! Anything it cannot read is refused as well, so it can only be stricter than yrs, never let
//! through what yrs would recurse on. (Embedded JSON, `Embed` and `Format` contents, is parsed
//! by serde_json, whose own recursion limit applies.)
//!
//! It also refuses client ids of 2^53 or more, in the blocks, their origins and the delete set
//! ([`state_vector_v1`] does the same for state vectors). Yjs clients make 32-bit ids; yrs
//! asserts (in debug builds) that ids fit 53 bits, and a failed assertion while it applies an
//! update unwinds through a transaction whose `Drop` panics again, which aborts the process
//! however the first panic is caught (found by the `yjs` fuzz target).

/// Deepest nesting of `Any` arrays and maps an update may hold.
pub const MAX_ANY_DEPTH: usize = 64;

/// Client ids are 53-bit numbers (JavaScript's safe integers).
const CLIENT_LIMIT: u64 = 1 << 53;

/// Why an update was not measured.
#[derive(Debug, PartialEq)]
pub enum Shape {
    /// Nests deeper than [`MAX_ANY_DEPTH`].
    TooDeep,
    /// Not a v1 update this reader understands (yrs would refuse it too, or could misread it).
    Unreadable(&'static str),
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn u8(&mut self) -> Result<u8, Shape> {
        let b = *self
            .buf
            .get(self.at)
            .ok_or(Shape::Unreadable("truncated"))?;
        self.at += 1;
        Ok(b)
    }

    fn skip(&mut self, n: usize) -> Result<(), Shape> {
        let end = self.at.checked_add(n).ok_or(Shape::Unreadable("length"))?;
        if end > self.buf.len() {
            return Err(Shape::Unreadable("truncated"));
        }
        self.at = end;
        Ok(())
    }

    /// An unsigned LEB128 varint (lib0 `writeVarUint`), at most 64 bits.
    fn var(&mut self) -> Result<u64, Shape> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Shape::Unreadable("varint too long"))
    }

    /// Skips a signed varint (lib0 `writeVarInt`: same continuation bit).
    fn skip_var(&mut self) -> Result<(), Shape> {
        for _ in 0..10 {
            if self.u8()? & 0x80 == 0 {
                return Ok(());
            }
        }
        Err(Shape::Unreadable("varint too long"))
    }

    /// A client id, which must fit 53 bits.
    fn client(&mut self) -> Result<u64, Shape> {
        let c = self.var()?;
        if c >= CLIENT_LIMIT {
            return Err(Shape::Unreadable("client id beyond 53 bits"));
        }
        Ok(c)
    }

    /// An id: client and clock.
    fn id(&mut self) -> Result<(), Shape> {
        self.client()?;
        self.var()?;
        Ok(())
    }

    fn len(&mut self) -> Result<usize, Shape> {
        usize::try_from(self.var()?).map_err(|_| Shape::Unreadable("length"))
    }

    /// A length-prefixed string or buffer.
    fn bytes(&mut self) -> Result<(), Shape> {
        let n = self.len()?;
        self.skip(n)
    }

    /// One `Any` value, nested ones included, without recursion; returns its depth.
    fn any(&mut self) -> Result<usize, Shape> {
        // per open container: children still to read, and whether each has a key first
        let mut open: Vec<(u64, bool)> = Vec::new();
        let mut deepest = 0;
        loop {
            if let Some((left, keyed)) = open.last_mut() {
                if *left == 0 {
                    open.pop();
                    if open.is_empty() {
                        return Ok(deepest);
                    }
                    continue;
                }
                *left -= 1;
                if *keyed {
                    self.bytes()?;
                }
            }
            match self.u8()? {
                127 | 126 | 121 | 120 => {}
                125 => self.skip_var()?,
                124 => self.skip(4)?,
                123 | 122 => self.skip(8)?,
                119 | 116 => self.bytes()?,
                tag @ (118 | 117) => {
                    let n = self.var()?;
                    open.push((n, tag == 118));
                    deepest = deepest.max(open.len());
                    if deepest > MAX_ANY_DEPTH {
                        return Err(Shape::TooDeep);
                    }
                    continue;
                }
                _ => return Err(Shape::Unreadable("unknown Any tag")),
            }
            if open.is_empty() {
                return Ok(deepest);
            }
        }
    }
}

/// The deepest `Any` in a v1-encoded update, or why it is refused.
pub fn any_depth_v1(update: &[u8]) -> Result<usize, Shape> {
    const HAS_ORIGIN: u8 = 0b1000_0000;
    const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
    const HAS_PARENT_SUB: u8 = 0b0010_0000;
    let mut c = Cursor { buf: update, at: 0 };
    let mut deepest = 0;
    let clients = c.var()?;
    for _ in 0..clients {
        let blocks = c.var()?;
        c.client()?;
        c.var()?; // clock
        for _ in 0..blocks {
            let info = c.u8()?;
            if info == 10 || info == 0 {
                c.var()?; // skip or GC: a length
                continue;
            }
            if info & HAS_ORIGIN != 0 {
                c.id()?;
            }
            if info & HAS_RIGHT_ORIGIN != 0 {
                c.id()?;
            }
            let parent_info = info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0;
            if parent_info {
                if c.var()? == 1 {
                    c.bytes()?; // a root type's name
                } else {
                    c.id()?; // the parent's
                }
                if info & HAS_PARENT_SUB != 0 {
                    c.bytes()?;
                }
            }
            match info & 0b1111 {
                1 => {
                    c.var()?; // deleted: a length
                }
                2 => {
                    // JSON: `len + 1` strings (yrs reads while `remaining >= 0`)
                    let n = c.var()?;
                    for _ in 0..=n {
                        c.bytes()?;
                    }
                }
                3..=5 => c.bytes()?, // binary, string, embed (JSON text)
                6 => {
                    c.bytes()?; // format: key, then JSON text
                    c.bytes()?;
                }
                7 => {
                    if c.u8()? == 3 {
                        c.bytes()?; // an XML element's name
                    }
                }
                8 => {
                    let n = c.var()?;
                    for _ in 0..n {
                        deepest = deepest.max(c.any()?);
                    }
                }
                9 => {
                    c.bytes()?; // sub-document guid, then its options
                    deepest = deepest.max(c.any()?);
                }
                _ => return Err(Shape::Unreadable("unknown content")),
            }
        }
    }
    // the delete set: per client, ranges of (clock, length)
    let clients = c.var()?;
    for _ in 0..clients {
        c.client()?;
        let ranges = c.var()?;
        for _ in 0..ranges {
            c.var()?;
            c.var()?;
        }
    }
    Ok(deepest)
}

/// Checks a v1 state vector: pairs of (client, clock), client ids within 53 bits.
pub fn state_vector_v1(sv: &[u8]) -> Result<(), Shape> {
    let mut c = Cursor { buf: sv, at: 0 };
    let n = c.var()?;
    for _ in 0..n {
        c.id()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Any, Array, Doc, Map, ReadTxn, StateVector, Text, Transact};

    fn update_with(v: Any) -> Vec<u8> {
        let doc = Doc::new();
        let arr = doc.get_or_insert_array("a");
        let mut t = doc.transact_mut();
        arr.push_back(&mut t, v);
        drop(t);
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    fn nested(depth: usize) -> Any {
        let mut v = Any::from("leaf");
        for i in 0..depth {
            v = if i % 2 == 0 {
                Any::Array(vec![Any::Null, v, Any::from(1.5)].into())
            } else {
                Any::from(std::collections::HashMap::from([
                    ("k".to_string(), v),
                    ("n".to_string(), Any::from(-7i64)),
                ]))
            };
        }
        v
    }

    #[test]
    fn real_updates_are_measured() {
        assert_eq!(any_depth_v1(&update_with(nested(0))), Ok(0));
        assert_eq!(any_depth_v1(&update_with(nested(5))), Ok(5));
        assert_eq!(any_depth_v1(&update_with(nested(64))), Ok(64));
        assert_eq!(any_depth_v1(&update_with(nested(65))), Err(Shape::TooDeep));
        // text with formatting, maps, nested types, deletions
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        let map = doc.get_or_insert_map("m");
        {
            let mut t = doc.transact_mut();
            text.insert(&mut t, 0, "hello world");
            text.format(
                &mut t,
                0,
                5,
                std::collections::HashMap::from([("bold".into(), Any::Bool(true))]),
            );
            text.remove_range(&mut t, 5, 3);
            map.insert(&mut t, "x", nested(3));
            map.insert(&mut t, "inner", yrs::MapPrelim::default());
        }
        let u = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert_eq!(any_depth_v1(&u), Ok(3));
    }

    #[test]
    fn hostile_nesting_is_refused_without_recursion() {
        let u = update_with(nested(3));
        let pos = u
            .windows(2)
            .position(|w| w == [117, 3])
            .expect("an array header");
        let mut deep = u[..pos].to_vec();
        for _ in 0..200_000 {
            deep.extend([117u8, 1]);
        }
        deep.extend(&u[pos..]);
        assert_eq!(any_depth_v1(&deep), Err(Shape::TooDeep));
        assert!(matches!(any_depth_v1(&[1, 1]), Err(Shape::Unreadable(_))));
        // found by the fuzzer: a client id beyond 53 bits aborted a debug build
        let crash = [1, 1, 0xb4, 0x55, 0x0a, 0x42, 0x0f, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(any_depth_v1(&crash).is_ok(), "a 14-bit client id is fine");
        let mut big = vec![1u8, 1];
        big.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x10]); // 2^53
        big.extend([0, 10, 1, 0]);
        assert_eq!(
            any_depth_v1(&big),
            Err(Shape::Unreadable("client id beyond 53 bits"))
        );
        assert!(state_vector_v1(&[1, 5, 3]).is_ok());
        assert!(state_vector_v1(&[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x10, 3]).is_err());
        assert!(matches!(any_depth_v1(&[]), Err(Shape::Unreadable(_))));
    }
}
