//! git's delta format: a base size, a result size, then copy and insert
//! instructions. Applying a delta is bounds-checked against both sizes so
//! that a hostile delta can neither read nor write out of bounds.

/// Errors from applying a delta.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeltaError {
    #[error("delta header truncated")]
    TruncatedHeader,
    #[error("delta expects a base of {expected} bytes, base has {actual}")]
    BaseSizeMismatch { expected: u64, actual: u64 },
    #[error("delta result of {size} bytes exceeds the limit of {limit} bytes")]
    ResultTooLarge { size: u64, limit: u64 },
    #[error(
        "delta copy of {len} bytes at offset {offset} reads outside a base of {base_len} bytes"
    )]
    CopyOutOfBounds {
        offset: u64,
        len: u64,
        base_len: u64,
    },
    #[error("delta writes past its declared result size of {size} bytes")]
    WriteOutOfBounds { size: u64 },
    #[error("delta instruction truncated")]
    TruncatedInstruction,
    #[error("delta uses reserved instruction 0")]
    ReservedInstruction,
    #[error("delta result has {actual} bytes, header declared {declared}")]
    ResultSizeMismatch { declared: u64, actual: u64 },
}

/// Read one little-endian base-128 size from the delta header.
pub fn read_size(data: &[u8], pos: &mut usize) -> Result<u64, DeltaError> {
    let mut value: u64 = 0;
    let mut shift = 0u32;
    loop {
        let byte = *data.get(*pos).ok_or(DeltaError::TruncatedHeader)?;
        *pos += 1;
        if shift >= 64 {
            return Err(DeltaError::TruncatedHeader);
        }
        value |= u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// The base and result sizes declared by a delta.
pub fn delta_sizes(delta: &[u8]) -> Result<(u64, u64), DeltaError> {
    let mut pos = 0;
    let base = read_size(delta, &mut pos)?;
    let result = read_size(delta, &mut pos)?;
    Ok((base, result))
}

/// Apply `delta` to `base`, appending the result to `out` (cleared first).
/// `max_result_bytes` bounds the allocation a hostile header can cause.
pub fn apply_delta(
    base: &[u8],
    delta: &[u8],
    out: &mut Vec<u8>,
    max_result_bytes: u64,
) -> Result<(), DeltaError> {
    out.clear();
    let mut pos = 0;
    let base_size = read_size(delta, &mut pos)?;
    let result_size = read_size(delta, &mut pos)?;
    if base_size != base.len() as u64 {
        return Err(DeltaError::BaseSizeMismatch {
            expected: base_size,
            actual: base.len() as u64,
        });
    }
    if result_size > max_result_bytes {
        return Err(DeltaError::ResultTooLarge {
            size: result_size,
            limit: max_result_bytes,
        });
    }
    out.reserve(result_size as usize);
    while pos < delta.len() {
        let op = delta[pos];
        pos += 1;
        if op & 0x80 != 0 {
            let mut offset: u64 = 0;
            let mut len: u64 = 0;
            for i in 0..4 {
                if op & (1 << i) != 0 {
                    let b = *delta.get(pos).ok_or(DeltaError::TruncatedInstruction)?;
                    pos += 1;
                    offset |= u64::from(b) << (8 * i);
                }
            }
            for i in 0..3 {
                if op & (0x10 << i) != 0 {
                    let b = *delta.get(pos).ok_or(DeltaError::TruncatedInstruction)?;
                    pos += 1;
                    len |= u64::from(b) << (8 * i);
                }
            }
            if len == 0 {
                len = 0x10000;
            }
            let end = offset.checked_add(len).ok_or(DeltaError::CopyOutOfBounds {
                offset,
                len,
                base_len: base.len() as u64,
            })?;
            if end > base.len() as u64 {
                return Err(DeltaError::CopyOutOfBounds {
                    offset,
                    len,
                    base_len: base.len() as u64,
                });
            }
            if out.len() as u64 + len > result_size {
                return Err(DeltaError::WriteOutOfBounds { size: result_size });
            }
            out.extend_from_slice(&base[offset as usize..end as usize]);
        } else if op != 0 {
            let len = op as usize;
            let data = delta
                .get(pos..pos + len)
                .ok_or(DeltaError::TruncatedInstruction)?;
            pos += len;
            if out.len() as u64 + len as u64 > result_size {
                return Err(DeltaError::WriteOutOfBounds { size: result_size });
            }
            out.extend_from_slice(data);
        } else {
            return Err(DeltaError::ReservedInstruction);
        }
    }
    if out.len() as u64 != result_size {
        return Err(DeltaError::ResultSizeMismatch {
            declared: result_size,
            actual: out.len() as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_and_insert() {
        let base = b"hello world";
        // base 11, result 11: copy 0..6 ("hello "), insert "there"
        let delta = [11u8, 11, 0x90, 6, 5, b't', b'h', b'e', b'r', b'e'];
        let mut out = Vec::new();
        apply_delta(base, &delta, &mut out, 1 << 20).unwrap();
        assert_eq!(out, b"hello there");
    }

    #[test]
    fn out_of_bounds_copy() {
        let base = b"abc";
        let delta = [3u8, 10, 0x91, 2, 10];
        let mut out = Vec::new();
        assert!(matches!(
            apply_delta(base, &delta, &mut out, 1 << 20),
            Err(DeltaError::CopyOutOfBounds { .. })
        ));
    }
}
