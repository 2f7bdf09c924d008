//! Record batch v2 (Kafka's "magic 2" format): read in place from a produce
//! request, and written straight into a fetch response.
//!
//! A batch is a 61-byte header and its records; the records alone are compressed
//! when the batch is. Every record is a varint length, then its attributes, its
//! timestamp and offset as deltas from the batch's, its key, value and headers.
//! Reading allocates nothing per record: a record's key, value and headers are
//! slices of the request (or of the one buffer a compressed batch is inflated
//! into, which the caller reuses).

use std::io::Read;

/// Bytes of a batch's header, up to and including its record count.
pub const HEADER_LEN: usize = 61;

const MAGIC: i8 = 2;
/// Where each header field starts.
const BATCH_LENGTH_AT: usize = 8;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// The CRC covers the batch from its attributes to its end.
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const RECORD_COUNT_AT: usize = 57;
/// What `batch_length` counts: the batch from its partition leader epoch on.
const LENGTH_BASE: usize = 12;

/// The compression codec in a batch's attributes.
const CODEC_MASK: i16 = 0x07;
const CONTROL_BIT: i16 = 0x20;

/// How a batch's records are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    /// Snappy, LZ4 or zstd (Kafka's codes 2, 3 and 4): refused.
    Other(u8),
}

/// Why a batch or a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("the record batch is cut short")]
    Truncated,
    #[error("record batch magic {0} is not 2 (only record batch v2 is served)")]
    Magic(i8),
    #[error("the record batch's CRC does not match its bytes")]
    Crc,
    #[error("compression codec {0} is not served (none and gzip are)")]
    Codec(u8),
    #[error("the batch's records inflate past {0} bytes")]
    TooLarge(usize),
    #[error("the gzip stream of the batch is corrupt")]
    Inflate,
    #[error("a record of the batch is malformed")]
    Malformed,
    #[error("the batch holds {declared} records but its bytes hold {found}")]
    Count { declared: i32, found: i32 },
}

/// One batch of a produce request, its header checked.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    bytes: &'a [u8],
}

impl<'a> Batch<'a> {
    fn field<const N: usize>(&self, at: usize) -> [u8; N] {
        self.bytes[at..at + N]
            .try_into()
            .expect("inside the header")
    }

    /// The offset of the batch's first record.
    pub fn base_offset(&self) -> u64 {
        i64::from_be_bytes(self.field(0)) as u64
    }

    pub fn attributes(&self) -> i16 {
        i16::from_be_bytes(self.field(ATTRIBUTES_AT))
    }

    pub fn codec(&self) -> Codec {
        match self.attributes() & CODEC_MASK {
            0 => Codec::None,
            1 => Codec::Gzip,
            other => Codec::Other(other as u8),
        }
    }

    /// A control batch (transaction markers), never sent by producers.
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_BIT != 0
    }

    pub fn record_count(&self) -> i32 {
        i32::from_be_bytes(self.field(RECORD_COUNT_AT))
    }

    /// Bytes of the whole batch, header included.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the batch is only its header (never: a header alone is refused
    /// as cut short, but a length has its `is_empty`).
    pub fn is_empty(&self) -> bool {
        self.bytes.len() <= HEADER_LEN
    }

    /// The records' bytes: in place, or inflated into `inflated` (cleared
    /// first) when compressed; at most `limit` bytes of them.
    pub fn records_data<'b>(
        &self,
        inflated: &'b mut Vec<u8>,
        limit: usize,
    ) -> Result<&'b [u8], BatchError>
    where
        'a: 'b,
    {
        let raw = &self.bytes[HEADER_LEN..];
        match self.codec() {
            Codec::None => Ok(raw),
            Codec::Gzip => {
                inflated.clear();
                let mut decoder = flate2::read::GzDecoder::new(raw).take(limit as u64 + 1);
                decoder
                    .read_to_end(inflated)
                    .map_err(|_| BatchError::Inflate)?;
                if inflated.len() > limit {
                    return Err(BatchError::TooLarge(limit));
                }
                Ok(inflated)
            }
            Codec::Other(c) => Err(BatchError::Codec(c)),
        }
    }

    /// The records, inflated into `inflated` (cleared first) when compressed;
    /// at most `limit` bytes of them.
    pub fn records<'b>(
        &self,
        inflated: &'b mut Vec<u8>,
        limit: usize,
    ) -> Result<Records<'b>, BatchError>
    where
        'a: 'b,
    {
        let data = self.records_data(inflated, limit)?;
        Ok(Records::resume(data, self.record_count()))
    }
}

/// Splits a produce request's records into batches, checking each one's
/// length, magic and CRC.
pub fn batches(mut data: &[u8]) -> impl Iterator<Item = Result<Batch<'_>, BatchError>> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let found = split_batch(data);
        match found {
            Ok((batch, rest)) => {
                data = rest;
                Some(Ok(batch))
            }
            Err(e) => {
                data = &[];
                Some(Err(e))
            }
        }
    })
}

fn split_batch(data: &[u8]) -> Result<(Batch<'_>, &[u8]), BatchError> {
    if data.len() < HEADER_LEN {
        return Err(BatchError::Truncated);
    }
    let length = i32::from_be_bytes(
        data[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4]
            .try_into()
            .expect("4 bytes"),
    );
    let total = usize::try_from(length)
        .ok()
        .and_then(|l| l.checked_add(LENGTH_BASE))
        .filter(|&t| t >= HEADER_LEN)
        .ok_or(BatchError::Truncated)?;
    if data.len() < total {
        return Err(BatchError::Truncated);
    }
    let (bytes, rest) = data.split_at(total);
    let magic = bytes[MAGIC_AT] as i8;
    if magic != MAGIC {
        return Err(BatchError::Magic(magic));
    }
    let crc = u32::from_be_bytes(bytes[CRC_AT..CRC_AT + 4].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[ATTRIBUTES_AT..]) != crc {
        return Err(BatchError::Crc);
    }
    Ok((Batch { bytes }, rest))
}

/// One record of a batch, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    /// None for a null value (a tombstone).
    pub value: Option<&'a [u8]>,
    /// How many headers.
    pub header_count: u32,
    /// The headers as the batch holds them, their count first (Kafka's record
    /// header encoding); empty when there are none.
    pub headers: &'a [u8],
}

/// The records of a batch, in order.
pub struct Records<'a> {
    data: &'a [u8],
    left: i32,
    declared: i32,
}

impl<'a> Records<'a> {
    /// The records of a batch from where a reading stopped: `data` holds the
    /// rest of its records, `left` of them.
    pub fn resume(data: &'a [u8], left: i32) -> Self {
        Records {
            data,
            left,
            declared: left,
        }
    }

    /// Bytes of records not read yet.
    pub fn rest_len(&self) -> usize {
        self.data.len()
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordRef<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left <= 0 {
            if !self.data.is_empty() || self.left < 0 {
                let e = BatchError::Count {
                    declared: self.declared,
                    found: self.declared - self.left,
                };
                self.data = &[];
                self.left = 0;
                return Some(Err(e));
            }
            return None;
        }
        match read_record(&mut self.data) {
            Ok(r) => {
                self.left -= 1;
                Some(Ok(r))
            }
            Err(e) => {
                let e = if e == BatchError::Truncated && self.data.is_empty() {
                    BatchError::Count {
                        declared: self.declared,
                        found: self.declared - self.left,
                    }
                } else {
                    e
                };
                self.left = 0;
                self.data = &[];
                Some(Err(e))
            }
        }
    }
}

#[inline]
fn read_record<'a>(data: &mut &'a [u8]) -> Result<RecordRef<'a>, BatchError> {
    if data.is_empty() {
        return Err(BatchError::Truncated);
    }
    let length = usize::try_from(read_varint(data)?).map_err(|_| BatchError::Malformed)?;
    if data.len() < length {
        return Err(BatchError::Malformed);
    }
    let (mut body, rest) = data.split_at(length);
    *data = rest;
    let _attributes = take(&mut body, 1)?;
    let timestamp_delta = read_varlong(&mut body)?;
    let offset_delta = read_varint(&mut body)?;
    let key = read_nullable(&mut body)?;
    let value = read_nullable(&mut body)?;
    let with_count = body;
    let header_count = u32::try_from(read_varint(&mut body)?).map_err(|_| BatchError::Malformed)?;
    let headers = if header_count == 0 {
        &[][..]
    } else {
        with_count
    };
    // Each header is checked to lie inside the record.
    let mut walk = body;
    for _ in 0..header_count {
        let key = read_nullable(&mut walk)?.ok_or(BatchError::Malformed)?;
        let _ = key;
        read_nullable(&mut walk)?;
    }
    if !walk.is_empty() {
        return Err(BatchError::Malformed);
    }
    Ok(RecordRef {
        timestamp_delta,
        offset_delta,
        key,
        value,
        header_count,
        headers,
    })
}

#[inline]
fn take<'a>(data: &mut &'a [u8], n: usize) -> Result<&'a [u8], BatchError> {
    if data.len() < n {
        return Err(BatchError::Malformed);
    }
    let (head, rest) = data.split_at(n);
    *data = rest;
    Ok(head)
}

#[inline]
fn read_nullable<'a>(data: &mut &'a [u8]) -> Result<Option<&'a [u8]>, BatchError> {
    match read_varint(data)? {
        -1 => Ok(None),
        n if n >= 0 => take(data, n as usize).map(Some),
        _ => Err(BatchError::Malformed),
    }
}

/// A zigzag varint of at most 5 bytes (Kafka's `varint`).
#[inline]
pub fn read_varint(data: &mut &[u8]) -> Result<i32, BatchError> {
    let v = read_unsigned(data, 5)?;
    let v = u32::try_from(v).map_err(|_| BatchError::Malformed)?;
    Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
}

/// A zigzag varint of at most 10 bytes (Kafka's `varlong`).
#[inline]
pub fn read_varlong(data: &mut &[u8]) -> Result<i64, BatchError> {
    let v = read_unsigned(data, 10)?;
    Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
}

#[inline]
fn read_unsigned(data: &mut &[u8], max_bytes: usize) -> Result<u64, BatchError> {
    // Most of a record's varints (small lengths and deltas) are one byte.
    if let Some((&b, rest)) = data.split_first() {
        if b < 0x80 {
            *data = rest;
            return Ok(u64::from(b));
        }
    }
    let mut value = 0u64;
    for i in 0..max_bytes {
        let (&b, rest) = data.split_first().ok_or(BatchError::Malformed)?;
        *data = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(BatchError::Malformed)
}

fn push_unsigned(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn unsigned_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn push_varint(out: &mut Vec<u8>, v: i64) {
    push_unsigned(out, zigzag(v));
}

fn varint_len(v: i64) -> usize {
    unsigned_len(zigzag(v))
}

/// Writes one uncompressed batch at the end of an output buffer: begin it,
/// [`BatchWriter::push`] each record (offsets ascending), then
/// [`BatchWriter::finish`] fills in the header's length, count, last offset,
/// timestamps and CRC. The buffer is lent to each call, so that the batch can
/// be written by a visitor that owns nothing.
#[derive(Debug)]
pub struct BatchWriter {
    start: usize,
    base_offset: u64,
    base_timestamp: i64,
    max_timestamp: i64,
    last_offset: u64,
    count: i32,
}

impl BatchWriter {
    /// Starts a batch at the end of `out` whose first record is `base_offset`,
    /// published at `base_timestamp` (milliseconds since the Unix epoch).
    pub fn begin(out: &mut Vec<u8>, base_offset: u64, base_timestamp: i64) -> Self {
        let start = out.len();
        out.resize(start + HEADER_LEN, 0);
        BatchWriter {
            start,
            base_offset,
            base_timestamp,
            max_timestamp: base_timestamp,
            last_offset: base_offset,
            count: 0,
        }
    }

    /// Bytes a record of these sizes adds to a batch, at most (its deltas
    /// small); `headers` as [`BatchWriter::push`] takes them.
    pub fn record_size(key: Option<usize>, value: usize, headers: usize) -> usize {
        let body = record_body_len(0, 0, key, value, headers);
        unsigned_len(zigzag(body as i64)) + body
    }

    /// Bytes of the batch so far, in `out`.
    pub fn len(&self, out: &[u8]) -> usize {
        out.len() - self.start
    }

    /// Appends a record: `offset` at or after the last one, `timestamp` in
    /// milliseconds, `headers` in Kafka's encoding with their count (empty for
    /// none).
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        out: &mut Vec<u8>,
        offset: u64,
        timestamp: i64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[u8],
    ) {
        let timestamp_delta = timestamp - self.base_timestamp;
        let offset_delta = (offset - self.base_offset) as i64;
        let body = record_body_len(
            timestamp_delta,
            offset_delta,
            key.map(<[u8]>::len),
            value.len(),
            headers.len(),
        );
        push_varint(out, body as i64);
        out.push(0);
        push_varint(out, timestamp_delta);
        push_varint(out, offset_delta);
        match key {
            Some(k) => {
                push_varint(out, k.len() as i64);
                out.extend_from_slice(k);
            }
            None => push_varint(out, -1),
        }
        push_varint(out, value.len() as i64);
        out.extend_from_slice(value);
        if headers.is_empty() {
            push_varint(out, 0);
        } else {
            out.extend_from_slice(headers);
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.last_offset = offset;
        self.count += 1;
    }

    /// Completes the header; an empty batch is taken back out.
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.count == 0 {
            out.truncate(self.start);
            return;
        }
        let h = &mut out[self.start..];
        let length = (h.len() - LENGTH_BASE) as i32;
        h[..8].copy_from_slice(&(self.base_offset as i64).to_be_bytes());
        h[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
        // Partition leader epoch 0: the broker is every partition's only leader.
        h[12..16].copy_from_slice(&0i32.to_be_bytes());
        h[MAGIC_AT] = MAGIC as u8;
        // Attributes 0: uncompressed, CreateTime, not transactional.
        h[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&0i16.to_be_bytes());
        let last_delta = (self.last_offset - self.base_offset) as i32;
        h[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&last_delta.to_be_bytes());
        h[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8]
            .copy_from_slice(&self.base_timestamp.to_be_bytes());
        h[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8]
            .copy_from_slice(&self.max_timestamp.to_be_bytes());
        // No producer id, epoch or sequence: the batch is not idempotent.
        h[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&(-1i64).to_be_bytes());
        h[51..53].copy_from_slice(&(-1i16).to_be_bytes());
        h[53..57].copy_from_slice(&(-1i32).to_be_bytes());
        h[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&self.count.to_be_bytes());
        let crc = crc32c::crc32c(&h[ATTRIBUTES_AT..]);
        h[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

fn record_body_len(
    timestamp_delta: i64,
    offset_delta: i64,
    key: Option<usize>,
    value: usize,
    headers: usize,
) -> usize {
    1 + varint_len(timestamp_delta)
        + varint_len(offset_delta)
        + key.map_or(varint_len(-1), |k| varint_len(k as i64) + k)
        + varint_len(value as i64)
        + value
        + headers.max(varint_len(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one_batch(records: &[(Option<&[u8]>, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = BatchWriter::begin(&mut out, 7, 1_000);
        for (i, (k, v)) in records.iter().enumerate() {
            w.push(&mut out, 7 + i as u64, 1_000 + i as i64, *k, v, &[]);
        }
        w.finish(&mut out);
        out
    }

    #[test]
    fn a_written_batch_reads_back_record_for_record() {
        let records: Vec<(Option<&[u8]>, &[u8])> = vec![
            (Some(b"k1"), b"hello"),
            (None, b""),
            (Some(b""), b"\x00\xff"),
        ];
        let bytes = one_batch(&records);
        let batch: Vec<_> = batches(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].codec(), Codec::None);
        assert_eq!(batch[0].record_count(), 3);
        let mut scratch = Vec::new();
        let read: Vec<_> = batch[0]
            .records(&mut scratch, 1 << 20)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (i, (r, (k, v))) in read.iter().zip(&records).enumerate() {
            assert_eq!(r.key, *k);
            assert_eq!(r.value, Some(*v));
            assert_eq!(r.offset_delta, i as i32);
            assert_eq!(r.timestamp_delta, i as i64);
        }
    }

    #[test]
    fn a_batch_whose_bytes_changed_is_refused_by_its_crc() {
        let mut bytes = one_batch(&[(None, b"payload")]);
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        assert_eq!(batches(&bytes).next().unwrap().err(), Some(BatchError::Crc));
    }

    #[test]
    fn a_cut_batch_and_a_wrong_magic_are_refused() {
        let bytes = one_batch(&[(None, b"payload")]);
        assert_eq!(
            batches(&bytes[..bytes.len() - 1]).next().unwrap().err(),
            Some(BatchError::Truncated)
        );
        let mut old = bytes.clone();
        old[MAGIC_AT] = 1;
        assert_eq!(
            batches(&old).next().unwrap().err(),
            Some(BatchError::Magic(1))
        );
    }

    #[test]
    fn a_gzip_batch_is_inflated_and_bounded() {
        use std::io::Write;
        let plain = one_batch(&[(Some(b"key"), b"value one"), (None, b"value two")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain[HEADER_LEN..]).unwrap();
        let packed = gz.finish().unwrap();
        let mut bytes = plain[..HEADER_LEN].to_vec();
        bytes.extend_from_slice(&packed);
        let length = (bytes.len() - LENGTH_BASE) as i32;
        bytes[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
        bytes[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&1i16.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[ATTRIBUTES_AT..]);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        let batch = batches(&bytes).next().unwrap().unwrap();
        assert_eq!(batch.codec(), Codec::Gzip);
        let mut scratch = Vec::new();
        let values: Vec<_> = batch
            .records(&mut scratch, 1 << 20)
            .unwrap()
            .map(|r| r.unwrap().value.unwrap().to_vec())
            .collect();
        assert_eq!(values, vec![b"value one".to_vec(), b"value two".to_vec()]);
        assert_eq!(
            batch.records(&mut scratch, 10).err(),
            Some(BatchError::TooLarge(10))
        );
    }

    #[test]
    fn a_batch_claiming_more_records_than_it_holds_is_refused() {
        let mut bytes = one_batch(&[(None, b"a")]);
        bytes[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[ATTRIBUTES_AT..]);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        let batch = batches(&bytes).next().unwrap().unwrap();
        let mut scratch = Vec::new();
        let read: Result<Vec<_>, _> = batch.records(&mut scratch, 1 << 20).unwrap().collect();
        assert_eq!(
            read,
            Err(BatchError::Count {
                declared: 5,
                found: 1
            })
        );
    }

    #[test]
    fn record_size_is_what_push_adds() {
        let headers = [2u8, 2, b'h', 2, b'v'];
        for (key, value, h) in [
            (None, 0, &[][..]),
            (Some(0), 5, &headers[..]),
            (Some(200), 70_000, &[][..]),
        ] {
            let k = key.map(|n| vec![1u8; n]);
            let v = vec![2u8; value];
            let mut out = Vec::new();
            let mut w = BatchWriter::begin(&mut out, 0, 0);
            w.push(&mut out, 0, 0, k.as_deref(), &v, h);
            assert_eq!(
                w.len(&out) - HEADER_LEN,
                BatchWriter::record_size(key, value, h.len())
            );
        }
    }

    #[test]
    fn headers_written_read_back_with_their_count() {
        // One header, "h" = "v": count 1, then name and value.
        let headers = [2u8, 2, b'h', 2, b'v'];
        let mut out = Vec::new();
        let mut w = BatchWriter::begin(&mut out, 0, 0);
        w.push(&mut out, 0, 0, None, b"x", &headers);
        w.push(&mut out, 1, 0, None, b"y", &[]);
        w.finish(&mut out);
        let batch = batches(&out).next().unwrap().unwrap();
        let mut scratch = Vec::new();
        let read: Vec<_> = batch
            .records(&mut scratch, 1 << 20)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!((read[0].header_count, read[0].headers), (1, &headers[..]));
        assert_eq!((read[1].header_count, read[1].headers), (0, &[][..]));
    }

    proptest! {
        #[test]
        fn varints_read_back_what_was_written(v in any::<i32>(), l in any::<i64>()) {
            let mut out = Vec::new();
            push_varint(&mut out, i64::from(v));
            push_varint(&mut out, l);
            let mut data = &out[..];
            prop_assert_eq!(read_varint(&mut data).unwrap(), v);
            prop_assert_eq!(read_varlong(&mut data).unwrap(), l);
            prop_assert!(data.is_empty());
        }

        #[test]
        fn any_bytes_read_as_batches_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut scratch = Vec::new();
            for batch in batches(&bytes).flatten() {
                if let Ok(records) = batch.records(&mut scratch, 4096) {
                    for r in records { let _ = r; }
                }
            }
        }
    }
}
