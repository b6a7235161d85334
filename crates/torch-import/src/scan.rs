//! A shadow run of a pickle stream before candle's `pickle::Stack` sees it.
//!
//! candle's reader trusts its input: a `LONG1` of more than 8 bytes overflows a shift (a panic
//! in debug builds), a deeply nested object overflows the thread stack when it is dropped, and
//! memo references (`BINGET`) are deep clones, so a small stream can expand exponentially.
//! This pass mirrors candle's stack machine opcode for opcode, with only the nesting depth and
//! the number of objects of each stack entry, and rejects such streams with a message. It
//! accepts exactly the opcodes candle knows (pickle protocol 2, as `torch.save` writes).

/// Deepest object nesting accepted (a real module checkpoint needs about 4 per module level).
pub(crate) const MAX_DEPTH: u32 = 200;
/// Most objects (plus string bytes / 16) that parsing may allocate, clones included.
pub(crate) const MAX_UNITS: u64 = 4_000_000;

#[derive(Clone, Copy)]
struct Node {
    depth: u32,
    units: u64,
    mark: bool,
}

const LEAF: Node = Node {
    depth: 1,
    units: 1,
    mark: false,
};

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Node>,
    memo: std::collections::HashMap<u32, Node>,
    total: u64,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(format!(
                "truncated at byte {} (needs {n} more bytes)",
                self.pos
            )),
        }
    }

    fn line(&mut self) -> Result<(), String> {
        match self.data[self.pos..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.pos += i + 1;
                Ok(())
            }
            None => Err(format!("truncated GLOBAL at byte {}", self.pos)),
        }
    }

    fn u32_le(&mut self, n: usize) -> Result<u32, String> {
        let b = self.take(n)?;
        let mut v = 0u32;
        for (i, &x) in b.iter().enumerate() {
            v |= (x as u32) << (8 * i);
        }
        Ok(v)
    }

    fn alloc(&mut self, units: u64) -> Result<(), String> {
        self.total = self.total.saturating_add(units);
        if self.total > MAX_UNITS {
            return Err(format!(
                "expands to more than {MAX_UNITS} objects (memo references are copied)"
            ));
        }
        Ok(())
    }

    fn push(&mut self, n: Node) -> Result<(), String> {
        if n.depth > MAX_DEPTH {
            return Err(format!("objects nested deeper than {MAX_DEPTH} levels"));
        }
        self.stack.push(n);
        Ok(())
    }

    fn leaf(&mut self, units: u64) -> Result<(), String> {
        self.alloc(units)?;
        self.push(Node { units, ..LEAF })
    }

    fn pop(&mut self) -> Result<Node, String> {
        self.stack
            .pop()
            .ok_or_else(|| format!("stack underflow at byte {}", self.pos))
    }

    fn pop_to_mark(&mut self) -> Result<Vec<Node>, String> {
        let Some(i) = self.stack.iter().rposition(|n| n.mark) else {
            return Err(format!("no MARK on the stack at byte {}", self.pos));
        };
        let items = self.stack.split_off(i + 1);
        self.stack.pop();
        Ok(items)
    }

    /// A new object holding `children`.
    fn combine(&mut self, children: &[Node]) -> Result<(), String> {
        let depth = children.iter().map(|c| c.depth).max().unwrap_or(0) + 1;
        let units = children.iter().fold(1u64, |a, c| a.saturating_add(c.units));
        self.alloc(1)?;
        self.push(Node {
            depth,
            units,
            mark: false,
        })
    }

    /// `children` appended to the object on top of the stack.
    fn extend_top(&mut self, children: &[Node]) -> Result<(), String> {
        let pos = self.pos;
        let top = self
            .stack
            .last_mut()
            .ok_or_else(|| format!("stack underflow at byte {pos}"))?;
        for c in children {
            top.depth = top.depth.max(c.depth + 1);
            top.units = top.units.saturating_add(c.units);
        }
        if top.depth > MAX_DEPTH {
            return Err(format!("objects nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    fn memo_put(&mut self, id: u32) -> Result<(), String> {
        let top = *self
            .stack
            .last()
            .ok_or_else(|| format!("memo put on an empty stack at byte {}", self.pos))?;
        self.alloc(top.units)?;
        self.memo.insert(id, top);
        Ok(())
    }

    fn memo_get(&mut self, id: u32) -> Result<(), String> {
        let Some(&n) = self.memo.get(&id) else {
            return Err(format!("memo entry {id} missing at byte {}", self.pos));
        };
        self.alloc(n.units)?;
        self.push(n)
    }

    fn run(&mut self) -> Result<(), String> {
        loop {
            let at = self.pos;
            let Some(&op) = self.data.get(self.pos) else {
                return Err("truncated: no STOP opcode".into());
            };
            self.pos += 1;
            match op {
                0x80 => {
                    self.take(1)?;
                }
                b'c' => {
                    self.line()?;
                    self.line()?;
                    self.leaf(1)?;
                }
                b'q' => {
                    let id = self.u32_le(1)?;
                    self.memo_put(id)?
                }
                b'r' => {
                    let id = self.u32_le(4)?;
                    self.memo_put(id)?
                }
                b'h' => {
                    let id = self.u32_le(1)?;
                    self.memo_get(id)?
                }
                b'j' => {
                    let id = self.u32_le(4)?;
                    self.memo_get(id)?
                }
                b')' | 0x88 | 0x89 | b'N' | b'}' | b'd' | b']' => self.leaf(1)?,
                b'J' => {
                    self.take(4)?;
                    self.leaf(1)?
                }
                b'K' => {
                    self.take(1)?;
                    self.leaf(1)?
                }
                b'M' => {
                    self.take(2)?;
                    self.leaf(1)?
                }
                b'G' => {
                    self.take(8)?;
                    self.leaf(1)?
                }
                b'X' => {
                    let len = self.u32_le(4)? as usize;
                    let s = self.take(len)?;
                    if std::str::from_utf8(s).is_err() {
                        return Err(format!("invalid UTF-8 string at byte {at}"));
                    }
                    self.leaf(1 + len as u64 / 16)?
                }
                0x8a => {
                    let n = self.u32_le(1)? as usize;
                    if n > 8 {
                        return Err(format!("integer of {n} bytes at byte {at} (at most 8)"));
                    }
                    self.take(n)?;
                    self.leaf(1)?
                }
                b'(' => {
                    self.alloc(1)?;
                    self.push(Node { mark: true, ..LEAF })?
                }
                b't' => {
                    let items = self.pop_to_mark()?;
                    self.combine(&items)?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    self.combine(&items)?
                }
                b'R' | b'b' | 0x81 => {
                    let a = self.pop()?;
                    let b = self.pop()?;
                    self.combine(&[a, b])?
                }
                b'Q' => {
                    let a = self.pop()?;
                    self.combine(&[a])?
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend_top(&[v])?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.extend_top(&[k, v])?
                }
                b'e' | b'u' => {
                    let items = self.pop_to_mark()?;
                    if op == b'u' && items.len() % 2 != 0 {
                        return Err(format!("SETITEMS with an odd item count at byte {at}"));
                    }
                    self.extend_top(&items)?
                }
                b'.' => return Ok(()),
                other => {
                    return Err(format!(
                        "unsupported opcode 0x{other:02x} at byte {at} (only pickle protocol 2 is supported)"
                    ));
                }
            }
        }
    }
}

/// Checks `data` (a whole pickle stream) as described in the module docs.
pub(crate) fn scan(data: &[u8]) -> Result<(), String> {
    Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        memo: Default::default(),
        total: 0,
    }
    .run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_small_module_like_stream() {
        // {"a": [1, 2.5, "x"]} with a memo put and get.
        let mut p = vec![
            0x80, 2, b'}', b'q', 0, b'(', b'X', 1, 0, 0, 0, b'a', b']', b'(', b'K', 1,
        ];
        p.extend([
            b'G', 0x40, 4, 0, 0, 0, 0, 0, 0, b'X', 1, 0, 0, 0, b'x', b'e', b'u', b'h', 0,
        ]);
        p.extend([0x86, b'.']);
        scan(&p).unwrap();
    }

    #[test]
    fn rejects_long_integers_truncation_and_unknown_opcodes() {
        assert!(scan(&[0x80, 2, 0x8a, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, b'.']).is_err());
        assert!(scan(&[0x80, 2, b'X', 255, 255, 255, 255, b'a']).is_err());
        assert!(scan(&[0x80, 2, b'K']).is_err());
        assert!(scan(&[0x80, 2, b'K', 1]).is_err());
        assert!(scan(&[0x80, 4, 0x95, 0, 0, 0, 0, 0, 0, 0, 0, b'.']).is_err());
        assert!(scan(&[0x80, 2, b'a', b'.']).is_err());
        assert!(scan(&[0x80, 2, b'h', 3, b'.']).is_err());
    }

    #[test]
    fn rejects_deep_nesting_and_memo_bombs() {
        let mut deep = vec![0x80, 2, b'N'];
        deep.extend(std::iter::repeat_n(0x85u8, 10_000));
        deep.push(b'.');
        let e = scan(&deep).unwrap_err();
        assert!(e.contains("nested"), "{e}");

        // l = [None]; repeat: l = (l, l) via memo -> 2^k objects.
        let mut bomb = vec![0x80, 2, b'N', b'q', 0];
        for _ in 0..40 {
            bomb.extend([b'h', 0, b'h', 0, 0x86, b'q', 0]);
        }
        bomb.push(b'.');
        let e = scan(&bomb).unwrap_err();
        assert!(e.contains("expands"), "{e}");
    }
}
