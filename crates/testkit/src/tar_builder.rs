//! Small tars in memory.

/// Builds a tar in memory with fixed owners and times, so the same calls
/// give the same bytes.
pub struct TarBuilder {
    inner: tar::Builder<Vec<u8>>,
}

impl std::fmt::Debug for TarBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarBuilder").finish_non_exhaustive()
    }
}

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TarBuilder {
    /// An empty archive.
    pub fn new() -> Self {
        Self {
            inner: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    /// A regular file with mode 0644.
    pub fn file(self, path: &str, data: &[u8]) -> Self {
        self.file_mode(path, data, 0o644)
    }

    /// A regular file with `mode`.
    pub fn file_mode(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.inner
            .append_data(&mut h, path, data)
            .expect("tar append");
        self
    }

    /// A directory with mode 0755.
    pub fn dir(mut self, path: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.inner
            .append_data(&mut h, path, &[][..])
            .expect("tar append");
        self
    }

    /// A symbolic link to `target`.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.inner
            .append_link(&mut h, path, target)
            .expect("tar append");
        self
    }

    /// The archive's bytes, end-of-archive blocks included.
    pub fn finish(self) -> Vec<u8> {
        self.inner.into_inner().expect("tar finish")
    }
}
