//! The bytes of the index files: file names, the index header and entries, and the
//! checkpoint (`docs/files.md` has the same tables). Every number is little-endian.

use crate::index::IndexProblem;

/// The checkpoint: how far every index is complete, and which persistence file.
pub const CHECKPOINT_FILE: &str = "index-checkpoint.idx";

/// The name of the index of a topic-partition in the data directory. Files are
/// named by the topic's numeric id, never its name (SPEC §11).
pub fn index_file_name(topic_id: u32, partition: u32) -> String {
    format!("index-{topic_id}-{partition}.idx")
}

/// The format version both kinds of index file carry.
pub const FORMAT_VERSION: u32 = 1;

const INDEX_MAGIC: [u8; 8] = *b"MKLOGIDX";
const CHECKPOINT_MAGIC: [u8; 8] = *b"MKIDXCKP";

/// Bytes of an index file's header. A multiple of [`ENTRY_LEN`], so that entries
/// never straddle a page: a reader never sees part of an entry the writer appended.
pub const HEADER_LEN: usize = 32;
/// Bytes of an index entry.
pub const ENTRY_LEN: usize = 16;
/// Bytes of the checkpoint file.
pub const CHECKPOINT_LEN: usize = 64;

/// One index entry: the record at `offset` is the line that starts at byte
/// `position` of the persistence file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: u64,
    pub position: u64,
}

impl IndexEntry {
    /// Appends the entry's 16 bytes.
    pub fn push_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
    }

    fn from_bytes(bytes: &[u8; ENTRY_LEN]) -> IndexEntry {
        let (offset, position) = bytes.split_at(8);
        IndexEntry {
            offset: u64_at(offset),
            position: u64_at(position),
        }
    }
}

/// The header of an index file. Every field is checked against what the opener
/// expects, so a damaged header never passes for another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    pub topic_id: u32,
    pub partition: u32,
    /// S: an entry whenever at least this many bytes of file have passed since the
    /// partition's last entry.
    pub step: u64,
}

impl IndexHeader {
    /// The header's bytes.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&INDEX_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.topic_id.to_le_bytes());
        b[16..20].copy_from_slice(&self.partition.to_le_bytes());
        // 20..24 reserved, zero.
        b[24..32].copy_from_slice(&self.step.to_le_bytes());
        b
    }

    /// Reads a whole index file: its header and its entries, checked to increase
    /// in offset and position.
    pub fn decode_file(bytes: &[u8]) -> Result<(IndexHeader, Vec<IndexEntry>), IndexProblem> {
        let Some((head, body)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(IndexProblem::TooShort {
                len: bytes.len() as u64,
            });
        };
        if head[0..8] != INDEX_MAGIC {
            return Err(IndexProblem::Magic);
        }
        let version = u32_at(&head[8..12]);
        if version != FORMAT_VERSION {
            return Err(IndexProblem::Version { found: version });
        }
        let header = IndexHeader {
            topic_id: u32_at(&head[12..16]),
            partition: u32_at(&head[16..20]),
            step: u64_at(&head[24..32]),
        };
        if body.len() % ENTRY_LEN != 0 {
            return Err(IndexProblem::PartialEntry {
                len: bytes.len() as u64,
            });
        }
        let mut entries = Vec::with_capacity(body.len() / ENTRY_LEN);
        append_entries(&mut entries, body)?;
        Ok((header, entries))
    }
}

/// Decodes whole entries from `bytes` onto `entries`, checking that each follows
/// the one before it in both offset and position.
pub(crate) fn append_entries(
    entries: &mut Vec<IndexEntry>,
    bytes: &[u8],
) -> Result<(), IndexProblem> {
    for chunk in bytes.chunks_exact(ENTRY_LEN) {
        let entry = IndexEntry::from_bytes(chunk.try_into().expect("a whole entry"));
        if let Some(last) = entries.last() {
            if entry.offset <= last.offset || entry.position <= last.position {
                return Err(IndexProblem::NotIncreasing {
                    entry: entries.len(),
                });
            }
        }
        entries.push(entry);
    }
    Ok(())
}

/// The persistence file's first record line: what tells that file from another
/// one (an append-only file keeps its first line; a new file has another, since
/// a line holds a publish time to the microsecond).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub position: u64,
    /// With its newline.
    pub len: u64,
    /// CRC-32 of the line's bytes, newline included.
    pub crc: u32,
}

impl Anchor {
    pub(crate) fn of_line(position: u64, line: &[u8]) -> Anchor {
        Anchor {
            position,
            len: line.len() as u64,
            crc: crc32fast::hash(line),
        }
    }
}

/// The checkpoint: every index of the indexed partitions is complete for the
/// record lines that end at or before byte `through` of the persistence file whose
/// first record line is `anchor` (None: the file had no record line before
/// `through`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub step: u64,
    pub through: u64,
    pub anchor: Option<Anchor>,
}

/// Marks "no anchor" in the checkpoint's anchor position.
const NO_ANCHOR: u64 = u64::MAX;

impl Checkpoint {
    /// The checkpoint file's bytes.
    pub fn to_bytes(self) -> [u8; CHECKPOINT_LEN] {
        let mut b = [0u8; CHECKPOINT_LEN];
        let anchor = self.anchor.unwrap_or(Anchor {
            position: NO_ANCHOR,
            len: 0,
            crc: 0,
        });
        b[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&anchor.crc.to_le_bytes());
        b[16..24].copy_from_slice(&self.step.to_le_bytes());
        b[24..32].copy_from_slice(&self.through.to_le_bytes());
        b[32..40].copy_from_slice(&anchor.position.to_le_bytes());
        b[40..48].copy_from_slice(&anchor.len.to_le_bytes());
        // 48..60 reserved, zero.
        let crc = crc32fast::hash(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads a checkpoint file's bytes, checking its checksum.
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, IndexProblem> {
        let Ok(b) = <&[u8; CHECKPOINT_LEN]>::try_from(bytes) else {
            return Err(IndexProblem::CheckpointLength {
                len: bytes.len() as u64,
            });
        };
        if b[0..8] != CHECKPOINT_MAGIC {
            return Err(IndexProblem::Magic);
        }
        let version = u32_at(&b[8..12]);
        if version != FORMAT_VERSION {
            return Err(IndexProblem::Version { found: version });
        }
        if crc32fast::hash(&b[..60]) != u32_at(&b[60..64]) {
            return Err(IndexProblem::CheckpointChecksum);
        }
        let position = u64_at(&b[32..40]);
        Ok(Checkpoint {
            step: u64_at(&b[16..24]),
            through: u64_at(&b[24..32]),
            anchor: (position != NO_ANCHOR).then(|| Anchor {
                position,
                len: u64_at(&b[40..48]),
                crc: u32_at(&b[12..16]),
            }),
        })
    }
}

fn u32_at(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("four bytes"))
}

fn u64_at(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("eight bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_use_the_topic_id_and_partition() {
        assert_eq!(index_file_name(0, 0), "index-0-0.idx");
        assert_eq!(index_file_name(12, 3), "index-12-3.idx");
        assert_ne!(CHECKPOINT_FILE, index_file_name(0, 0));
    }

    fn file_of(header: IndexHeader, entries: &[(u64, u64)]) -> Vec<u8> {
        let mut bytes = header.to_bytes().to_vec();
        for &(offset, position) in entries {
            IndexEntry { offset, position }.push_bytes(&mut bytes);
        }
        bytes
    }

    const HEADER: IndexHeader = IndexHeader {
        topic_id: 7,
        partition: 2,
        step: 4096,
    };

    #[test]
    fn an_index_file_reads_back_its_header_and_entries() {
        let bytes = file_of(HEADER, &[(0, 60), (40, 5000), (41, 9100)]);
        assert_eq!(bytes.len(), HEADER_LEN + 3 * ENTRY_LEN);
        assert_eq!(&bytes[..8], b"MKLOGIDX");
        assert_eq!(bytes[12], 7, "little-endian topic id");
        let (header, entries) = IndexHeader::decode_file(&bytes).unwrap();
        assert_eq!(header, HEADER);
        assert_eq!(
            entries,
            [
                IndexEntry {
                    offset: 0,
                    position: 60
                },
                IndexEntry {
                    offset: 40,
                    position: 5000
                },
                IndexEntry {
                    offset: 41,
                    position: 9100
                }
            ]
        );
        let (_, none) = IndexHeader::decode_file(&file_of(HEADER, &[])).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn damaged_index_files_say_what_is_wrong() {
        let good = file_of(HEADER, &[(0, 60), (40, 5000)]);
        let decode = |b: &[u8]| IndexHeader::decode_file(b).map(|_| ());
        assert_eq!(decode(&good[..20]), Err(IndexProblem::TooShort { len: 20 }));
        assert_eq!(
            decode(&good[..good.len() - 3]),
            Err(IndexProblem::PartialEntry {
                len: good.len() as u64 - 3
            })
        );
        let mut magic = good.clone();
        magic[0] = b'X';
        assert_eq!(decode(&magic), Err(IndexProblem::Magic));
        let mut version = good.clone();
        version[8] = 9;
        assert_eq!(decode(&version), Err(IndexProblem::Version { found: 9 }));
        for scribbled in [
            file_of(HEADER, &[(0, 60), (0, 5000)]),
            file_of(HEADER, &[(0, 60), (40, 60)]),
            file_of(HEADER, &[(0, 60), (40, 5000), (39, 6000)]),
        ] {
            assert!(
                matches!(decode(&scribbled), Err(IndexProblem::NotIncreasing { .. })),
                "{scribbled:?}"
            );
        }
    }

    #[test]
    fn a_checkpoint_reads_back_and_its_checksum_catches_any_changed_byte() {
        for anchor in [
            None,
            Some(Anchor {
                position: 58,
                len: 71,
                crc: 0xdead_beef,
            }),
        ] {
            let c = Checkpoint {
                step: 65536,
                through: 123_456_789,
                anchor,
            };
            let bytes = c.to_bytes();
            assert_eq!(Checkpoint::from_bytes(&bytes), Ok(c));
            for i in 0..CHECKPOINT_LEN {
                let mut damaged = bytes;
                damaged[i] ^= 0x10;
                assert!(Checkpoint::from_bytes(&damaged).is_err(), "byte {i}");
            }
            assert_eq!(
                Checkpoint::from_bytes(&bytes[..10]),
                Err(IndexProblem::CheckpointLength { len: 10 })
            );
        }
    }
}
