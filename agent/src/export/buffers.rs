//! Output buffers for renderings of megabytes: a rendering is written into the buffer of the one
//! before last once no response holds it any more, so rendering again neither faults in fresh
//! pages nor leaves the allocator holding freed ones each time.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// A renderer's last two outputs.
#[derive(Debug, Default)]
pub struct Outputs(VecDeque<Bytes>);

impl Outputs {
    /// An empty buffer: the oldest output's, if no one holds it any more; else a new one with
    /// room for a little more than the last output, so that it is allocated once.
    pub fn buffer(&mut self) -> BytesMut {
        let room = self.0.back().map_or(0, |b| b.len() + b.len() / 8);
        while self.0.len() > 1 {
            let oldest = self.0.pop_front().expect("two outputs kept");
            if let Ok(mut b) = oldest.try_into_mut() {
                b.clear();
                return b;
            }
        }
        BytesMut::with_capacity(room)
    }

    /// `out`, frozen, and kept to be written again once released.
    pub fn keep(&mut self, out: BytesMut) -> Bytes {
        let out = out.freeze();
        self.0.push_back(out.clone());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer is written again once released, never while a response still holds it.
    #[test]
    fn the_buffer_before_last_is_reused_once_released() {
        let mut o = Outputs::default();
        let mut b = o.buffer();
        b.extend_from_slice(&[1; 1000]);
        let first = o.keep(b);
        let at = first.as_ptr();
        drop(first);
        let mut b = o.buffer();
        assert!(b.capacity() >= 1000, "room for the last output");
        assert_ne!(b.as_ptr(), at, "only one output so far: none is reused");
        b.extend_from_slice(&[2; 1000]);
        let held = o.keep(b);
        assert_eq!(
            o.buffer().as_ptr(),
            at,
            "the released buffer is written again"
        );
        let mut b = o.buffer();
        b.extend_from_slice(&[3; 10]);
        let _third = o.keep(b);
        assert_ne!(
            o.buffer().as_ptr(),
            held.as_ptr(),
            "a held buffer is left alone"
        );
        assert_eq!(held, vec![2; 1000]);
    }
}
