//! Text from the byte tokenizer's tokens, as it streams.

/// Turns bytes into text as they arrive: complete UTF-8 sequences at once, an invalid byte as
/// U+FFFD, an incomplete sequence held until its next bytes (or, at the end, written lossily).
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// The text that `b` completes (empty while a sequence is incomplete).
    pub fn push(&mut self, b: u8) -> String {
        self.pending.push(b);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..good]));
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..good + bad);
                        }
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// What is held back, lossily: the end of the stream.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_sequences_split_across_bytes_come_out_whole_and_bad_bytes_become_replacements() {
        let mut u = Utf8Stream::default();
        let euro = "€".as_bytes();
        assert_eq!(u.push(b'a'), "a");
        assert_eq!(u.push(euro[0]), "");
        assert_eq!(u.push(euro[1]), "");
        assert_eq!(u.push(euro[2]), "€");
        assert_eq!(u.push(0xff), "\u{fffd}");
        assert_eq!(u.push(euro[0]), "");
        assert_eq!(u.push(b'b'), "\u{fffd}b");
        assert_eq!(u.push(euro[0]), "");
        assert_eq!(u.finish(), "\u{fffd}");
    }
}
