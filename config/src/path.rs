//! Dotted key paths such as `webrtc.ice_servers[0].urls`.

use std::fmt;

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Segment {
    /// A key in a table.
    Key(String),
    /// An element of an array (or array of tables).
    Index(usize),
}

/// The location of a value in the document, from the root table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub(crate) struct KeyPath(pub(crate) Vec<Segment>);

impl KeyPath {
    /// This path extended by a key.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_owned()));
        path
    }

    /// This path extended by an array index.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    /// Whether one of the two paths is a prefix of (or equal to) the other.
    pub(crate) fn overlaps(&self, other: &Self) -> bool {
        let n = self.0.len().min(other.0.len());
        self.0[..n] == other.0[..n]
    }

    /// This path cut after its last key, so that it names a table entry (what can be removed
    /// from a document): `a.b[2]` becomes `a.b`, `a[0].b` stays.
    pub(crate) fn up_to_last_key(&self) -> Self {
        let end = self
            .0
            .iter()
            .rposition(|s| matches!(s, Segment::Key(_)))
            .map_or(0, |i| i + 1);
        Self(self.0[..end].to_vec())
    }

    /// The path without its last segment (the root stays the root).
    pub(crate) fn parent(&self) -> Self {
        let mut path = self.clone();
        path.0.pop();
        path
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}
