//! The ids a spill holds, known by hash, in memory that does not grow with
//! them.
//!
//! Each write to the spill adds a **run**: the written rows' [`id_hash`]es,
//! sorted, in a file of the spill's directory. Memory holds a Bloom filter
//! over every run (16 to 32 bits an id, about one false hit in a thousand
//! at its fullest), each run's fences (the first hash of each page of
//! [`PAGE`] hashes: a thousandth of the run's size) and the hashes of rows
//! taken back from the spill. A lookup the filter passes is confirmed by
//! reading one page of each run, so an answer is exact (up to a collision
//! of 128-bit hashes, see [`id_hash`]). Runs are merged as they
//! accumulate, the newest into the one before while that one is no larger
//! (a binary counter), so n ids written in chunks of c make at most
//! log2(n / c) + 1 runs, and each hash is rewritten about that many times.
//!
//! [`id_hash`]: super::id_hash

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::IdHashSet;

/// Hashes per page of a run file: one fence each, one read per lookup.
const PAGE: usize = 256;

/// Bytes of one hash in a run file (little-endian).
const HASH_BYTES: usize = 16;

/// Bits of the Bloom filter per id at its fullest; it doubles past that.
const FILTER_BITS_PER_ID: u64 = 16;

/// Ids the first Bloom filter is sized for.
const FILTER_MIN_IDS: u64 = 1 << 16;

/// The spilled ids of one table, by [`id_hash`](super::id_hash).
pub(crate) struct SpilledIds {
    dir: PathBuf,
    runs: Vec<Run>,
    filter: Filter,
    /// Hashes written to the runs, counting each write (a hash taken back
    /// and written again counts twice): what the filter holds.
    written: u64,
    /// Hashes taken back from the spill since their last write; the runs
    /// still hold them.
    removed: IdHashSet,
    /// The number in the next run file's name.
    next_file: u64,
}

impl SpilledIds {
    /// An empty set whose run files go to `dir` (the spill's directory,
    /// removed with it).
    pub fn new(dir: &Path) -> SpilledIds {
        SpilledIds {
            dir: dir.to_path_buf(),
            runs: Vec::new(),
            filter: Filter::new(FILTER_MIN_IDS),
            written: 0,
            removed: IdHashSet::default(),
            next_file: 0,
        }
    }

    /// Add the hashes of rows just written to the spill (ids new to it).
    pub fn add(&mut self, hashes: &[u128]) -> Result<()> {
        if hashes.is_empty() {
            return Ok(());
        }
        let mut sorted = hashes.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let path = self.next_path();
        let run = Run::write(path, sorted.iter().copied().map(Ok))?;
        self.runs.push(run);
        self.written += sorted.len() as u64;
        if !self.removed.is_empty() {
            for h in &sorted {
                self.removed.remove(h);
            }
        }
        if self.written > self.filter.capacity {
            self.rebuild_filter()?;
        } else {
            for h in &sorted {
                self.filter.insert(*h);
            }
        }
        self.merge_runs()
    }

    /// Whether a row of this hash is in the spill.
    pub fn contains(&self, hash: u128) -> Result<bool> {
        if !self.filter.may_contain(hash) || self.removed.contains(&hash) {
            return Ok(false);
        }
        for run in self.runs.iter().rev() {
            if run.contains(hash)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The row of this hash was taken back from the spill.
    pub fn remove(&mut self, hash: u128) {
        self.removed.insert(hash);
    }

    /// Bytes this set keeps in memory (its run files aside).
    #[cfg(test)]
    fn memory_bytes(&self) -> usize {
        self.filter.bytes()
            + self
                .runs
                .iter()
                .map(|r| r.fences.len() * HASH_BYTES)
                .sum::<usize>()
            + self.removed.capacity() * (HASH_BYTES + 1)
    }

    /// How many run files there are.
    #[cfg(test)]
    fn run_count(&self) -> usize {
        self.runs.len()
    }

    fn next_path(&mut self) -> PathBuf {
        self.next_file += 1;
        run_path(&self.dir, self.next_file)
    }

    /// Merge the newest run into the one before while that one is no
    /// larger.
    fn merge_runs(&mut self) -> Result<()> {
        loop {
            let n = self.runs.len();
            if n < 2 || self.runs[n - 2].len > self.runs[n - 1].len {
                return Ok(());
            }
            let path = self.next_path();
            let merged = Run::write(
                path,
                Merged::new(self.runs[n - 2].hashes()?, self.runs[n - 1].hashes()?),
            )?;
            for old in self.runs.drain(n - 2..) {
                old.remove();
            }
            self.runs.push(merged);
        }
    }

    /// A filter for twice the ids written, filled from the runs.
    fn rebuild_filter(&mut self) -> Result<()> {
        let mut filter = Filter::new(self.written.saturating_mul(2));
        for run in &self.runs {
            for h in run.hashes()? {
                filter.insert(h?);
            }
        }
        self.filter = filter;
        Ok(())
    }
}

/// One sorted run of hashes in a file.
struct Run {
    path: PathBuf,
    file: File,
    len: u64,
    /// The first hash of each page.
    fences: Vec<u128>,
}

impl Run {
    /// Write sorted hashes to a new file at `path`. The file is not synced:
    /// it lives only as long as the transaction.
    fn write(path: PathBuf, hashes: impl Iterator<Item = Result<u128>>) -> Result<Run> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| run_error(&path, "create", e))?;
        let mut out = BufWriter::with_capacity(1 << 16, &file);
        let mut fences = Vec::new();
        let mut len = 0u64;
        let mut last = None;
        for h in hashes {
            let h = h?;
            if last == Some(h) {
                continue;
            }
            if len.is_multiple_of(PAGE as u64) {
                fences.push(h);
            }
            out.write_all(&h.to_le_bytes())
                .map_err(|e| run_error(&path, "write", e))?;
            last = Some(h);
            len += 1;
        }
        out.flush().map_err(|e| run_error(&path, "write", e))?;
        drop(out);
        fences.shrink_to_fit();
        Ok(Run {
            path,
            file,
            len,
            fences,
        })
    }

    /// Whether the run holds `hash`: one page read.
    fn contains(&self, hash: u128) -> Result<bool> {
        let page = self.fences.partition_point(|f| *f <= hash);
        if page == 0 {
            return Ok(false);
        }
        let page = page - 1;
        if self.fences[page] == hash {
            return Ok(true);
        }
        let first = (page * PAGE) as u64;
        let n = (self.len - first).min(PAGE as u64) as usize;
        let mut buf = vec![0u8; n * HASH_BYTES];
        self.file
            .read_exact_at(&mut buf, first * HASH_BYTES as u64)
            .map_err(|e| run_error(&self.path, "read", e))?;
        let at = |i: usize| {
            let mut b = [0u8; HASH_BYTES];
            b.copy_from_slice(&buf[i * HASH_BYTES..(i + 1) * HASH_BYTES]);
            u128::from_le_bytes(b)
        };
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match at(mid).cmp(&hash) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(true),
            }
        }
        Ok(false)
    }

    /// The run's hashes in order, read from its file.
    fn hashes(&self) -> Result<RunReader<'_>> {
        let file = File::open(&self.path).map_err(|e| run_error(&self.path, "read", e))?;
        Ok(RunReader {
            run: self,
            reader: BufReader::with_capacity(1 << 16, file),
            left: self.len,
        })
    }

    /// Remove the run's file (best effort: the spill's directory goes with
    /// the spill anyway).
    fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads a run's hashes from its start.
struct RunReader<'a> {
    run: &'a Run,
    reader: BufReader<File>,
    left: u64,
}

impl Iterator for RunReader<'_> {
    type Item = Result<u128>;

    fn next(&mut self) -> Option<Result<u128>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut b = [0u8; HASH_BYTES];
        match self.reader.read_exact(&mut b) {
            Ok(()) => Some(Ok(u128::from_le_bytes(b))),
            Err(e) => {
                self.left = 0;
                Some(Err(run_error(&self.run.path, "read", e)))
            }
        }
    }
}

/// Two sorted streams of hashes merged into one (duplicates kept; the run
/// written from it drops them).
struct Merged<A: Iterator<Item = Result<u128>>, B: Iterator<Item = Result<u128>>> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<A: Iterator<Item = Result<u128>>, B: Iterator<Item = Result<u128>>> Merged<A, B> {
    fn new(a: A, b: B) -> Self {
        Merged {
            a: a.peekable(),
            b: b.peekable(),
        }
    }
}

impl<A: Iterator<Item = Result<u128>>, B: Iterator<Item = Result<u128>>> Iterator for Merged<A, B> {
    type Item = Result<u128>;

    fn next(&mut self) -> Option<Result<u128>> {
        let take_a = match (self.a.peek(), self.b.peek()) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            // An error is passed on first.
            (Some(Err(_)), _) => true,
            (_, Some(Err(_))) => false,
            (Some(Ok(a)), Some(Ok(b))) => a <= b,
        };
        if take_a { self.a.next() } else { self.b.next() }
    }
}

fn run_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("ids-{n:06}.bin"))
}

fn run_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Storage(format!(
        "cannot {what} the spill's id file {}: {e}",
        path.display()
    ))
}

/// A blocked Bloom filter over 128-bit hashes: each hash sets 7 bits of
/// one 512-bit block (one cache line), chosen by its own bits (the hashes
/// are uniform already).
struct Filter {
    blocks: Vec<[u64; 8]>,
    /// Ids it is sized for.
    capacity: u64,
}

impl Filter {
    fn new(ids: u64) -> Filter {
        let capacity = ids.max(FILTER_MIN_IDS);
        let blocks = (capacity * FILTER_BITS_PER_ID).div_ceil(512) as usize;
        Filter {
            blocks: vec![[0u64; 8]; blocks],
            capacity,
        }
    }

    /// The block of a hash and the 7 bits it sets there (9 bits of the
    /// hash's low half each).
    fn place(&self, hash: u128) -> (usize, impl Iterator<Item = (usize, u64)> + use<>) {
        let block = (((hash >> 64) as u64 as u128 * self.blocks.len() as u128) >> 64) as usize;
        let low = hash as u64;
        let bits = (0..7).map(move |i| {
            let bit = (low >> (i * 9)) & 511;
            ((bit / 64) as usize, 1u64 << (bit % 64))
        });
        (block, bits)
    }

    fn insert(&mut self, hash: u128) {
        let (block, bits) = self.place(hash);
        let words = &mut self.blocks[block];
        for (w, mask) in bits {
            words[w] |= mask;
        }
    }

    fn may_contain(&self, hash: u128) -> bool {
        let (block, mut bits) = self.place(hash);
        let words = &self.blocks[block];
        bits.all(|(w, mask)| words[w] & mask != 0)
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.blocks.len() * 64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spill::id_hash;

    fn hashes(from: u64, n: u64) -> Vec<u128> {
        (from..from + n)
            .map(|i| id_hash(&format!("id{i}")))
            .collect()
    }

    #[test]
    fn ids_written_in_chunks_are_found_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = SpilledIds::new(dir.path());
        for chunk in 0..20u64 {
            set.add(&hashes(chunk * 1000, 1000)).unwrap();
        }
        // 20 chunks as a binary counter: runs of 16 and 4 chunks.
        assert_eq!(set.run_count(), 2);
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 2, "merged runs' files are removed");
        for h in hashes(0, 20_000) {
            assert!(set.contains(h).unwrap());
        }
        let absent = hashes(20_000, 20_000);
        assert!(absent.iter().all(|h| !set.contains(*h).unwrap()));
        // The filter answers most absent ids without a read: fewer than 1%
        // pass it.
        let passed = absent
            .iter()
            .filter(|h| set.filter.may_contain(**h))
            .count();
        assert!(
            passed < 200,
            "{passed} of 20,000 absent ids passed the filter"
        );
    }

    #[test]
    fn removed_ids_are_gone_until_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = SpilledIds::new(dir.path());
        let hs = hashes(0, 600);
        set.add(&hs).unwrap();
        set.remove(hs[7]);
        assert!(!set.contains(hs[7]).unwrap());
        assert!(set.contains(hs[8]).unwrap());
        set.add(&[hs[7]]).unwrap();
        assert!(set.contains(hs[7]).unwrap());
    }

    #[test]
    fn the_filter_grows_with_the_ids_and_memory_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = SpilledIds::new(dir.path());
        let n = 300_000u64;
        for chunk in 0..(n / 30_000) {
            set.add(&hashes(chunk * 30_000, 30_000)).unwrap();
        }
        assert!(set.filter.capacity >= n);
        for h in hashes(0, n).into_iter().step_by(997) {
            assert!(set.contains(h).unwrap());
        }
        // 16 bytes an id in a hash set would be 4.8 MB; the filter takes at
        // most 4 bytes an id and the fences a sixteenth of a byte.
        let bytes = set.memory_bytes() as u64;
        assert!(bytes <= n * 4 + n / 16 + 4096, "{bytes} bytes in memory");
        let absent = hashes(n, 20_000);
        assert!(absent.iter().all(|h| !set.contains(*h).unwrap()));
    }

    #[test]
    fn a_lookup_reports_a_missing_run_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = SpilledIds::new(dir.path());
        let hs = hashes(0, 1000);
        set.add(&hs).unwrap();
        // Truncated under it: the page read fails.
        for e in std::fs::read_dir(dir.path()).unwrap() {
            std::fs::File::options()
                .write(true)
                .open(e.unwrap().path())
                .unwrap()
                .set_len(0)
                .unwrap();
        }
        // A hash that is not a fence needs a page read.
        let h = hs
            .iter()
            .copied()
            .find(|h| !set.runs[0].fences.contains(h))
            .unwrap();
        let err = set.contains(h).unwrap_err();
        assert!(err.to_string().contains("spill's id file"), "{err}");
    }
}
