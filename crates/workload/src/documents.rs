//! The sealed image's documents, read once at start-up into memory (the
//! workload keeps no other state, and never writes plaintext to disk).

use std::path::Path;

use confsum_encfs::{Escaped, FileKind, Filesystem, Volume};
use zeroize::Zeroizing;

use crate::Error;

/// The most documents an image may hold.
pub const MAX_DOCUMENTS: usize = 10_000;
/// The largest document, in bytes.
pub const MAX_DOCUMENT_BYTES: u64 = 16 * 1024 * 1024;

pub(crate) struct Document {
    pub(crate) id: String,
    pub(crate) text: Zeroizing<String>,
}

/// The documents of an opened image: every regular file, by path (its id,
/// without the leading `/`), `lost+found` excepted. Bytes that are not
/// UTF-8 are replaced (U+FFFD), as a tokenizer would need text anyway.
pub(crate) struct Documents {
    docs: Vec<Document>,
}

impl Documents {
    pub(crate) fn open(image: &Path, key_file: &[u8]) -> Result<Self, Error> {
        let fs = Volume::open(image, key_file)
            .and_then(Volume::filesystem)
            .map_err(Error::Image)?;
        let mut docs = Vec::new();
        walk(&fs, b"/", &mut docs)?;
        Ok(Documents { docs })
    }

    pub(crate) fn len(&self) -> usize {
        self.docs.len()
    }

    pub(crate) fn ids(&self) -> Vec<String> {
        self.docs.iter().map(|d| d.id.clone()).collect()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Document> {
        self.docs.iter()
    }
}

fn walk(fs: &Filesystem, dir: &[u8], out: &mut Vec<Document>) -> Result<(), Error> {
    for entry in fs.list(dir).map_err(Error::Image)? {
        if entry.path == b"/lost+found" {
            continue;
        }
        match entry.kind {
            FileKind::Dir => walk(fs, &entry.path, out)?,
            FileKind::File => {
                let id =
                    Escaped::new(entry.path.strip_prefix(b"/").unwrap_or(&entry.path)).to_string();
                if entry.size > MAX_DOCUMENT_BYTES {
                    return Err(Error::DocumentTooLarge {
                        id,
                        max: MAX_DOCUMENT_BYTES,
                    });
                }
                if out.len() >= MAX_DOCUMENTS {
                    return Err(Error::TooManyDocuments { max: MAX_DOCUMENTS });
                }
                let mut bytes = Zeroizing::new(Vec::new());
                fs.copy_to(&entry.path, &mut *bytes).map_err(Error::Image)?;
                let text = Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
                out.push(Document { id, text });
            }
            _ => {}
        }
    }
    Ok(())
}
